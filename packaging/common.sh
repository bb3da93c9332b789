# Shared by build-deb.sh and build-tarball.sh (sourced, not run).
# Sets: REPO, TARGET_DIR, OUT_DIR, VERSION; defines stage_tree DESTDIR UNITDIR.
#
# The install layout, kept the same in copyd.spec and dbus/*.service:
#   /usr/bin/copyctl                                        the CLI
#   /usr/libexec/copyd/copyd                                the daemon (not a user command)
#   /usr/share/dbus-1/system.d/org.example.Copyd1.conf      bus policy
#   /usr/share/dbus-1/system-services/org.example.Copyd1.service  bus activation
#   $UNITDIR/copyd.service                                  systemd unit
#   /usr/share/polkit-1/actions/org.example.copyd1.policy   polkit actions
#   /etc/copyd/config.toml                                  configuration (conffile)
#   /usr/share/man/man{1,8}/*.gz                            man pages in docs/, if any
#   /usr/share/doc/copyd/                                   SECURITY.md, INSTALL.md,
#                                                           50-copyd-example.rules

REPO=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$REPO/$TARGET_DIR ;; esac
OUT_DIR=${OUT_DIR:-$TARGET_DIR/packaging}
# Which build to package: release, unless PROFILE says otherwise (the test
# suite packages its debug build to check the recipes).
PROFILE=${PROFILE:-release}
# The workspace version: the first `version = "..."` in Cargo.toml
# ([workspace.package]).
VERSION=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$REPO/Cargo.toml" | head -n 1)
[ -n "$VERSION" ] || { echo "$0: cannot read the version from $REPO/Cargo.toml" >&2; exit 1; }

need_binaries() {
    for b in copyd copyctl; do
        if [ ! -x "$TARGET_DIR/$PROFILE/$b" ]; then
            echo "$0: $TARGET_DIR/$PROFILE/$b is missing: run \`cargo build --release\` first" >&2
            exit 1
        fi
    done
}

# stage_tree DESTDIR UNITDIR: install everything under DESTDIR.
stage_tree() {
    d=$1 unitdir=$2
    install -D -m 0755 "$TARGET_DIR/$PROFILE/copyctl" "$d/usr/bin/copyctl"
    install -D -m 0755 "$TARGET_DIR/$PROFILE/copyd" "$d/usr/libexec/copyd/copyd"
    install -D -m 0644 "$REPO/dbus/org.example.Copyd1.conf" \
        "$d/usr/share/dbus-1/system.d/org.example.Copyd1.conf"
    install -D -m 0644 "$REPO/dbus/org.example.Copyd1.service" \
        "$d/usr/share/dbus-1/system-services/org.example.Copyd1.service"
    install -D -m 0644 "$REPO/systemd/copyd.service" "$d$unitdir/copyd.service"
    install -D -m 0644 "$REPO/polkit/org.example.copyd1.policy" \
        "$d/usr/share/polkit-1/actions/org.example.copyd1.policy"
    install -D -m 0644 "$REPO/packaging/config.toml" "$d/etc/copyd/config.toml"
    for f in "$REPO"/docs/*.1 "$REPO"/docs/*.8; do
        [ -f "$f" ] || continue
        sec=${f##*.}
        install -D -m 0644 "$f" "$d/usr/share/man/man$sec/$(basename "$f")"
        gzip -9n -f "$d/usr/share/man/man$sec/$(basename "$f")"
    done
    for f in "$REPO/docs/SECURITY.md" "$REPO/docs/INSTALL.md" \
             "$REPO/polkit/rules.d/50-copyd-example.rules"; do
        [ -f "$f" ] && install -D -m 0644 "$f" "$d/usr/share/doc/copyd/$(basename "$f")"
    done
    return 0
}
