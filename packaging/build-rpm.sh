#!/bin/sh
# Build copyd-<version>-1.<arch>.rpm with rpmbuild from `cargo build --release`
# (or the build PROFILE names)
# output (copyd.spec --with prebuilt). Source0 is made from this working tree.
# Writes to $OUT_DIR (default target/packaging/).
#   packaging/build-rpm.sh
set -eu
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
need_binaries
command -v rpmbuild >/dev/null || { echo "$0: rpmbuild not found (Debian: apt-get install rpm)" >&2; exit 1; }

top=$(mktemp -d)
trap 'rm -rf "$top"' EXIT INT TERM
mkdir -p "$top/SOURCES" "$top/SPECS"
# Source0: the packaging inputs of the working tree (no target/, no .git).
tar -C "$REPO" --exclude=./target --exclude=./.git --transform "s,^\.,copyd-$VERSION," \
    -czf "$top/SOURCES/copyd-$VERSION.tar.gz" \
    ./dbus ./systemd ./polkit ./packaging ./docs ./Cargo.toml ./LICENSE-MIT ./LICENSE-APACHE
sed "s/^Version: .*/Version:        $VERSION/" "$REPO/packaging/copyd.spec" > "$top/SPECS/copyd.spec"
# --nodeps: BuildRequires are checked against the rpm database, which is
# empty on a Debian build host.
rpmbuild -bb --nodeps --with prebuilt \
    --define "_topdir $top" \
    --define "packager copyd developers <copyd@example.org>" \
    --define "copyd_bindir $TARGET_DIR/$PROFILE" \
    "$top/SPECS/copyd.spec" >"$top/rpmbuild.log" 2>&1 || { cat "$top/rpmbuild.log" >&2; exit 1; }
mkdir -p "$OUT_DIR"
for r in "$top"/RPMS/*/*.rpm; do cp "$r" "$OUT_DIR/"; echo "$OUT_DIR/$(basename "$r")"; done
