#!/bin/sh
# Build copyd_<version>_<arch>.deb (and copyd-dbgsym_<version>_<arch>.ddeb)
# with debhelper (debian/) from the binaries cargo built. Writes to $OUT_DIR
# (default target/packaging/) and prints the paths, the .deb first.
#   packaging/build-deb.sh
#   DEB_VERSION=0.1.0+1 packaging/build-deb.sh   a newer version (the upgrade
#                                                test), with its changelog entry
# dpkg-buildpackage runs in a temporary copy of debian/: it writes its
# products into the parent of the source tree, which must not be the
# checkout's parent.
set -eu
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
need_binaries
for tool in dpkg-buildpackage dh; do
    command -v $tool >/dev/null || { echo "$0: $tool not found (apt-get install dpkg-dev debhelper)" >&2; exit 1; }
done

changelog_version=$(dpkg-parsechangelog -l "$REPO/debian/changelog" -S Version)
if [ "$changelog_version" != "$VERSION" ]; then
    echo "$0: debian/changelog is at $changelog_version, Cargo.toml at $VERSION: add a changelog entry" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
src=$work/copyd-$VERSION
mkdir -p "$src"
cp -r "$REPO/debian" "$src/debian"
if [ -n "${DEB_VERSION:-}" ]; then
    { printf 'copyd (%s) unstable; urgency=medium\n\n  * Rebuilt as %s.\n\n -- copyd developers <copyd@example.org>  %s\n\n' \
          "$DEB_VERSION" "$DEB_VERSION" "$(date -R)"
      cat "$REPO/debian/changelog"; } > "$src/debian/changelog"
fi
# -d: the build dependencies are cargo's (rustup's), not bookworm packages.
if ! (cd "$src" && COPYD_REPO="$REPO" PROFILE="$PROFILE" CARGO_TARGET_DIR="$TARGET_DIR" \
        dpkg-buildpackage -b -d -us -uc >"$work/build.log" 2>&1); then
    cat "$work/build.log" >&2
    exit 1
fi
mkdir -p "$OUT_DIR"
for f in "$work"/*.deb "$work"/*.ddeb; do
    [ -f "$f" ] || continue
    cp "$f" "$OUT_DIR/"
done
ls "$OUT_DIR"/copyd_*"${DEB_VERSION:-$VERSION}"_*.deb
ls "$OUT_DIR"/copyd-dbgsym_*"${DEB_VERSION:-$VERSION}"_*.*deb 2>/dev/null || true
