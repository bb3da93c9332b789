#!/bin/sh
# Build copyd_<version>_<arch>.deb with dpkg-deb from `cargo build --release`
# output. Writes to $OUT_DIR (default target/packaging/).
#   packaging/build-deb.sh
set -eu
. "$(cd "$(dirname "$0")" && pwd)/common.sh"
need_binaries
command -v dpkg-deb >/dev/null || { echo "$0: dpkg-deb not found" >&2; exit 1; }

arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/copyd
stage_tree "$root" /lib/systemd/system

mkdir -p "$root/DEBIAN"
size=$(du -sk "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: copyd
Version: $VERSION
Architecture: $arch
Maintainer: copyd developers <copyd@example.org>
Installed-Size: $size
Depends: dbus, polkitd
Section: admin
Priority: optional
Description: file copy service on D-Bus
 copyd copies and moves files on behalf of its callers over D-Bus
 (org.example.Copyd1), with progress, pause/resume, checkpoints that survive
 restarts, and several copy engines (reflink, copy_file_range, io_uring,
 splice). Unprivileged callers act with their own file permissions;
 privileged copies are authorized by polkit. Includes the copyctl client.
CONTROL

echo /etc/copyd/config.toml > "$root/DEBIAN/conffiles"

cat > "$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    # New unit file: tell systemd, if it is running.
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
    fi
    # New bus policy and activation file: tell the system bus, if running.
    # polkitd notices new actions by itself.
    if [ -S /run/dbus/system_bus_socket ]; then
        dbus-send --system --type=method_call --dest=org.freedesktop.DBus \
            / org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1 || true
    fi
fi
exit 0
SCRIPT

cat > "$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
# On removal stop the service; running jobs are checkpointed by copyd.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop copyd.service >/dev/null 2>&1 || true
fi
exit 0
SCRIPT

cat > "$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
case "$1" in
remove|purge)
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload >/dev/null 2>&1 || true
    fi
    if [ -S /run/dbus/system_bus_socket ]; then
        dbus-send --system --type=method_call --dest=org.freedesktop.DBus \
            / org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1 || true
    fi
    ;;
esac
# Purge removes the checkpoints too (the config goes with the conffile).
if [ "$1" = purge ]; then
    rm -rf /var/lib/copyd
fi
exit 0
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$OUT_DIR"
deb=$OUT_DIR/copyd_${VERSION}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
