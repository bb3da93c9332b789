#!/bin/sh
# Install (or remove) copyd from the unpacked tarball. Run as root from the
# directory that holds this script:
#   ./install.sh               install into /
#   DESTDIR=/some/root ./install.sh   install under another root (no reloads)
#   ./install.sh --uninstall   remove the installed files (keeps /etc/copyd
#                              and /var/lib/copyd)
# An existing /etc/copyd/config.toml is never overwritten: the new example
# goes next to it as config.toml.new.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest=${DESTDIR:-}
files="usr/bin/copyctl
usr/libexec/copyd/copyd
usr/share/dbus-1/system.d/org.example.Copyd1.conf
usr/share/dbus-1/system-services/org.example.Copyd1.service
usr/lib/systemd/system/copyd.service
usr/share/polkit-1/actions/org.example.copyd1.policy"
extra=$(cd "$here" && find usr/share/man usr/share/doc -type f 2>/dev/null || true)

if [ -z "$dest" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or set DESTDIR)" >&2; exit 1
fi

reload() {
    [ -z "$dest" ] || return 0
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
    if [ -S /run/dbus/system_bus_socket ]; then
        dbus-send --system --type=method_call --dest=org.freedesktop.DBus \
            / org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1 || true
    fi
}

if [ "${1:-}" = --uninstall ]; then
    if [ -z "$dest" ] && [ -d /run/systemd/system ]; then systemctl stop copyd.service 2>/dev/null || true; fi
    for f in $files $extra; do rm -f "$dest/$f"; done
    rmdir "$dest/usr/libexec/copyd" "$dest/usr/share/doc/copyd" 2>/dev/null || true
    reload
    echo "copyd removed (kept /etc/copyd and /var/lib/copyd)"
    exit 0
fi

for f in $files; do
    [ -f "$here/$f" ] || { echo "install.sh: $here/$f missing: incomplete tarball" >&2; exit 1; }
done
for f in $files $extra; do
    mode=0644
    case $f in usr/bin/*|usr/libexec/*) mode=0755 ;; esac
    install -D -m "$mode" "$here/$f" "$dest/$f"
done
if [ -e "$dest/etc/copyd/config.toml" ]; then
    install -D -m 0644 "$here/etc/copyd/config.toml" "$dest/etc/copyd/config.toml.new"
    echo "kept $dest/etc/copyd/config.toml; the shipped example is config.toml.new"
else
    install -D -m 0644 "$here/etc/copyd/config.toml" "$dest/etc/copyd/config.toml"
fi
reload
echo "copyd installed. Try: busctl introspect org.example.Copyd1 /org/example/Copyd1"
