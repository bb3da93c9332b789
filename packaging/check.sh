#!/bin/sh
# Build every package from `cargo build --release` output and inspect it.
#   packaging/check.sh            use the existing target/release binaries
#   packaging/check.sh --build    run `cargo build --release --bins` first
# Checks: the .deb (dpkg-deb -c/-I: paths, modes, Depends, conffiles,
# maintainer scripts parse), the tarball (tar tzf: paths; install.sh into a
# DESTDIR and --uninstall again, keeping an edited config), the .rpm when
# rpmbuild exists (rpm -qlp, -qcp, --requires), and that the daemon path is
# the same in the unit, the activation file and all three packages.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"

if [ "${1:-}" = --build ]; then
    (cd "$REPO" && cargo build --release --bins)
fi
need_binaries

fail=0
ok()   { echo "ok   - $*"; }
bad()  { echo "FAIL - $*"; fail=1; }
skip() { echo "skip - $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
export OUT_DIR="$tmp/out"

daemon=/usr/libexec/copyd/copyd
common="usr/bin/copyctl
usr/libexec/copyd/copyd
usr/share/dbus-1/system.d/org.example.Copyd1.conf
usr/share/dbus-1/system-services/org.example.Copyd1.service
usr/share/polkit-1/actions/org.example.copyd1.policy
etc/copyd/config.toml"

# has LISTFILE PATH...: every PATH appears in the listing
has() {
    list=$1; shift
    for p in "$@"; do
        grep -qE "(^|[ /.])$p\$" "$list" || { bad "$(basename "$list"): missing $p"; return 1; }
    done
    return 0
}

# --- the daemon path, in the sources
grep -q "^ExecStart=$daemon --system\$" "$REPO/systemd/copyd.service" \
    && grep -q "^Exec=$daemon --system\$" "$REPO/dbus/org.example.Copyd1.service" \
    && grep -q "^SystemdService=copyd.service\$" "$REPO/dbus/org.example.Copyd1.service" \
    && ok "unit and activation file both run $daemon --system" \
    || bad "unit and activation file disagree on the daemon path"

# --- deb
if deb=$("$here/build-deb.sh"); then
    dpkg-deb -c "$deb" > "$tmp/deb.long"
    awk '{print $NF}' "$tmp/deb.long" > "$tmp/deb.list"
    has "$tmp/deb.list" $common lib/systemd/system/copyd.service && ok "deb has the full tree ($(basename "$deb"))"
    grep -q -- "-rwxr-xr-x root/root .*\./usr/libexec/copyd/copyd\$" "$tmp/deb.long" \
        && ok "deb: daemon is root-owned 0755" || bad "deb: daemon owner/mode"
    [ "$(dpkg-deb -f "$deb" Depends)" = "dbus, polkitd" ] && ok "deb Depends: dbus, polkitd" || bad "deb Depends"
    dpkg-deb -e "$deb" "$tmp/DEBIAN"
    [ "$(cat "$tmp/DEBIAN/conffiles")" = /etc/copyd/config.toml ] && ok "deb conffiles: /etc/copyd/config.toml" || bad "deb conffiles"
    for s in postinst prerm postrm; do sh -n "$tmp/DEBIAN/$s" || bad "deb $s does not parse"; done
    grep -q ReloadConfig "$tmp/DEBIAN/postinst" && ok "deb postinst reloads the bus" || bad "deb postinst"
else
    bad "build-deb.sh failed"
fi

# --- tarball
if tgz=$("$here/build-tarball.sh"); then
    tar tzf "$tgz" > "$tmp/tgz.list"
    top=copyd-$VERSION
    has "$tmp/tgz.list" $(for p in $common lib/systemd/system/copyd.service install.sh; do echo "$top/$p"; done) \
        && ok "tarball has the full tree and install.sh ($(basename "$tgz"))"
    mkdir "$tmp/x" "$tmp/root"
    tar -C "$tmp/x" -xzf "$tgz"
    DESTDIR="$tmp/root" "$tmp/x/$top/install.sh" >/dev/null
    missing=""
    for p in $common lib/systemd/system/copyd.service; do [ -f "$tmp/root/$p" ] || missing="$missing $p"; done
    [ -z "$missing" ] && [ -x "$tmp/root$daemon" ] && ok "install.sh installs into DESTDIR" || bad "install.sh: missing$missing"
    echo "# edited" >> "$tmp/root/etc/copyd/config.toml"
    DESTDIR="$tmp/root" "$tmp/x/$top/install.sh" >/dev/null
    grep -q "# edited" "$tmp/root/etc/copyd/config.toml" && [ -f "$tmp/root/etc/copyd/config.toml.new" ] \
        && ok "install.sh keeps an edited config (writes config.toml.new)" || bad "install.sh overwrote the config"
    DESTDIR="$tmp/root" "$tmp/x/$top/install.sh" --uninstall >/dev/null
    left=$(cd "$tmp/root" && find . -type f | sort | tr '\n' ' ')
    [ "$left" = "./etc/copyd/config.toml ./etc/copyd/config.toml.new " ] \
        && ok "install.sh --uninstall removes all but /etc/copyd" || bad "after --uninstall: $left"
else
    bad "build-tarball.sh failed"
fi

# --- rpm
if command -v rpmbuild >/dev/null; then
    if rpm=$("$here/build-rpm.sh"); then
        rpm -qlp "$rpm" 2>/dev/null > "$tmp/rpm.list"
        has "$tmp/rpm.list" $common usr/lib/systemd/system/copyd.service var/lib/copyd \
            && ok "rpm has the full tree ($(basename "$rpm"))"
        [ "$(rpm -qcp "$rpm" 2>/dev/null)" = /etc/copyd/config.toml ] && ok "rpm %config: /etc/copyd/config.toml" || bad "rpm config files"
        rpm -qp --requires "$rpm" 2>/dev/null | grep -qx dbus && rpm -qp --requires "$rpm" 2>/dev/null | grep -qx polkit \
            && ok "rpm Requires: dbus, polkit" || bad "rpm Requires"
    else
        bad "build-rpm.sh failed"
    fi
else
    skip "rpmbuild not installed: copyd.spec not built (Debian: apt-get install rpm)"
fi

exit $fail
