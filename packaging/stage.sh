#!/bin/sh
# Install copyd's files under DESTDIR with the systemd unit in UNITDIR:
#   packaging/stage.sh DESTDIR UNITDIR
# debian/rules calls this (PROFILE and CARGO_TARGET_DIR name the build).
set -eu
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
need_binaries
stage_tree "$1" "$2"
