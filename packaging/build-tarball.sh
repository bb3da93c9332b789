#!/bin/sh
# Build copyd-<version>-<arch>.tar.gz: the same tree as the .deb (systemd unit
# in /usr/lib/systemd/system) under copyd-<version>/, plus install.sh.
# Writes to $OUT_DIR (default target/packaging/).
#   packaging/build-tarball.sh
set -eu
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
need_binaries

arch=$(uname -m)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
top=copyd-$VERSION
stage_tree "$work/$top" /usr/lib/systemd/system
install -m 0755 "$REPO/packaging/install.sh" "$work/$top/install.sh"

mkdir -p "$OUT_DIR"
tgz=$OUT_DIR/copyd-$VERSION-$arch.tar.gz
tar -C "$work" --owner=0 --group=0 --numeric-owner --sort=name -czf "$tgz" "$top"
echo "$tgz"
