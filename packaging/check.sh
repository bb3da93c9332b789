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
if debs=$("$here/build-deb.sh"); then
    deb=$(echo "$debs" | head -n 1)
    dbgsym=$(echo "$debs" | sed -n 2p)
    dpkg-deb -c "$deb" > "$tmp/deb.long"
    awk '{print $NF}' "$tmp/deb.long" > "$tmp/deb.list"
    has "$tmp/deb.list" $common usr/lib/systemd/system/copyd.service \
        usr/share/dbus-1/interfaces/org.example.Copyd1.xml \
        usr/share/doc/copyd/copyright usr/share/doc/copyd/changelog.gz \
        usr/share/doc/copyd/copyd-metrics.conf \
        usr/share/man/man1/copyctl.1.gz usr/share/man/man1/copyctl-copy.1.gz \
        usr/share/man/man5/copyd.conf.5.gz usr/share/man/man8/copyd.8.gz \
        usr/share/bash-completion/completions/copyctl usr/share/zsh/vendor-completions/_copyctl \
        usr/share/fish/vendor_completions.d/copyctl.fish \
        && ok "deb has the full tree ($(basename "$deb"))"
    grep -q -- "-rwxr-xr-x root/root .*\./usr/libexec/copyd/copyd\$" "$tmp/deb.long" \
        && ok "deb: daemon is root-owned 0755" || bad "deb: daemon owner/mode"
    # Depends: dpkg-shlibdeps' libc6 (and libgcc-s1) plus the two services.
    depends=$(dpkg-deb -f "$deb" Depends)
    echo "$depends" | grep -q "libc6 (>= " && echo "$depends" | grep -q "dbus, polkitd" \
        && ok "deb Depends computed: $depends" || bad "deb Depends: $depends"
    dpkg-deb -e "$deb" "$tmp/DEBIAN"
    [ "$(cat "$tmp/DEBIAN/conffiles")" = /etc/copyd/config.toml ] && ok "deb conffiles: /etc/copyd/config.toml" || bad "deb conffiles"
    for s in postinst prerm postrm; do sh -n "$tmp/DEBIAN/$s" || bad "deb $s does not parse"; done
    grep -q "deb-systemd-invoke stop 'copyd.service'" "$tmp/DEBIAN/prerm" \
        && grep -q "deb-systemd-invoke \$_dh_action 'copyd.service'" "$tmp/DEBIAN/postinst" \
        && grep -q "deb-systemd-helper purge 'copyd.service'" "$tmp/DEBIAN/postrm" \
        && ok "deb maintainer scripts use deb-systemd-helper/-invoke" || bad "deb maintainer scripts"
    # Stripped: no .debug_info left in the shipped binaries; it is in -dbgsym.
    mkdir "$tmp/debx" && dpkg-deb -x "$deb" "$tmp/debx"
    # Every man page renders, without a groff warning, and copyctl(1)'s
    # SEE ALSO pages exist.
    pages=0 badpages=""
    for page in "$tmp"/debx/usr/share/man/man*/*.gz; do
        pages=$((pages + 1))
        if ! MANWIDTH=80 man --warnings -l "$page" > "$tmp/page.txt" 2> "$tmp/page.err" \
            || [ -s "$tmp/page.err" ] || [ ! -s "$tmp/page.txt" ]; then
            badpages="$badpages $(basename "$page")"
            sed 's/^/    man: /' "$tmp/page.err"
        fi
    done
    for named in $(zcat "$tmp/debx/usr/share/man/man1/copyctl.1.gz" | sed -n 's/^copyctl\\-\(.*\)(1)$/\1/p' | sed 's/\\-/-/g'); do
        [ -f "$tmp/debx/usr/share/man/man1/copyctl-$named.1.gz" ] || badpages="$badpages copyctl-$named.1(missing)"
    done
    [ -z "$badpages" ] && [ "$pages" -ge 4 ] && ok "man -l renders all $pages pages (copyctl(1) and its subcommand pages, copyd(8), copyd.conf(5))" \
        || bad "man pages:$badpages"
    if readelf -S "$tmp/debx/usr/libexec/copyd/copyd" "$tmp/debx/usr/bin/copyctl" | grep -q "\.debug_info"; then
        bad "deb binaries are not stripped"
    elif [ -n "$dbgsym" ] && dpkg-deb -c "$dbgsym" > "$tmp/dbgsym.list" \
            && grep -q "usr/lib/debug/.build-id/.*\.debug\$" "$tmp/dbgsym.list"; then
        ok "deb binaries stripped, debug info in $(basename "$dbgsym")"
    else
        bad "no -dbgsym package with the debug info"
    fi
    # bash: `copyctl <TAB>` offers the subcommands, `copyctl copy --engine
    # <TAB>` the engines, `--on-conflict <TAB>` the policies.
    comp="$tmp/debx/usr/share/bash-completion/completions/copyctl"
    complete_words() {  # complete_words WORD... : what TAB after them offers
        bash -c '. "$0"; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE};
                 _copyctl_with_ids copyctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}";
                 printf "%s\n" "${COMPREPLY[@]}"' "$comp" "$@" | sort | tr '\n' ' '
    }
    subs=$(complete_words copyctl "")
    engines=$(complete_words copyctl copy --engine "")
    conflicts=$(complete_words copyctl copy --on-conflict "")
    echo "    bash: copyctl <TAB>: $subs"
    echo "    bash: copyctl copy --engine <TAB>: $engines"
    echo "    bash: copyctl copy --on-conflict <TAB>: $conflicts"
    case $subs in *"copy "*"list "*"status "*) ok "bash completes the subcommands" ;; *) bad "bash subcommands: $subs" ;; esac
    [ "$engines" = "auto copy_file_range io_uring reflink splice standard " ] \
        && ok "bash completes --engine" || bad "bash --engine: $engines"
    case $conflicts in *fail*overwrite*skip*) ok "bash completes --on-conflict" ;; *) bad "bash --on-conflict: $conflicts" ;; esac
    if command -v lintian >/dev/null; then
        # Every warning lintian may print is explained in packaging/LINTIAN.md
        # (or overridden, with the reason, in debian/copyd.lintian-overrides).
        lintian --tag-display-limit 0 "$deb" $dbgsym > "$tmp/lintian.out" 2>&1 || true
        sed 's/^/    lintian: /' "$tmp/lintian.out"
        errors=$(grep -c "^E: " "$tmp/lintian.out" || true)
        warnings=$(grep -c "^W: " "$tmp/lintian.out" || true)
        [ "$errors" -eq 0 ] && ok "lintian: $errors errors, $warnings warnings" || bad "lintian: $errors errors"
    else
        skip "lintian not installed (apt-get install lintian)"
    fi
else
    bad "build-deb.sh failed"
fi

# --- tarball
if tgz=$("$here/build-tarball.sh"); then
    tar tzf "$tgz" > "$tmp/tgz.list"
    top=copyd-$VERSION
    has "$tmp/tgz.list" $(for p in $common usr/lib/systemd/system/copyd.service install.sh; do echo "$top/$p"; done) \
        && ok "tarball has the full tree and install.sh ($(basename "$tgz"))"
    mkdir "$tmp/x" "$tmp/root"
    tar -C "$tmp/x" -xzf "$tgz"
    DESTDIR="$tmp/root" "$tmp/x/$top/install.sh" >/dev/null
    missing=""
    for p in $common usr/lib/systemd/system/copyd.service; do [ -f "$tmp/root/$p" ] || missing="$missing $p"; done
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
        has "$tmp/rpm.list" $common usr/lib/systemd/system/copyd.service \
            usr/share/doc/copyd/copyd-metrics.conf \
            usr/share/dbus-1/interfaces/org.example.Copyd1.xml usr/share/licenses/copyd.*/LICENSE-MIT \
            usr/share/bash-completion/completions/copyctl \
            && ok "rpm has the full tree ($(basename "$rpm"))"
        [ "$(rpm -qcp "$rpm" 2>/dev/null)" = /etc/copyd/config.toml ] && ok "rpm %config: /etc/copyd/config.toml" || bad "rpm config files"
        rpm -qp --requires "$rpm" 2>/dev/null | grep -qx dbus && rpm -qp --requires "$rpm" 2>/dev/null | grep -qx polkit \
            && ok "rpm Requires: dbus, polkit" || bad "rpm Requires"
        rpm -qp --scripts "$rpm" 2>/dev/null > "$tmp/rpm.scripts"
        grep -q "systemctl --no-reload disable --now copyd.service\|systemd-update-helper" "$tmp/rpm.scripts" \
            && grep -q "try-restart copyd.service\|mark-restart-system-units" "$tmp/rpm.scripts" \
            && ok "rpm scriptlets from %systemd_post/%systemd_preun/%systemd_postun_with_restart" \
            || bad "rpm scriptlets"
        if command -v rpmlint >/dev/null; then
            # Warnings left are explained in packaging/LINTIAN.md.
            rpmlint -r "$here/rpmlintrc" "$rpm" > "$tmp/rpmlint.out" 2>&1 || true
            sed 's/^/    rpmlint: /' "$tmp/rpmlint.out"
            summary=$(grep "packages and .* checked" "$tmp/rpmlint.out" || true)
            echo "$summary" | grep -q " 0 errors," && ok "rpmlint: $summary" || bad "rpmlint: $summary"
        else
            skip "rpmlint not installed (apt-get install rpmlint)"
        fi
    else
        bad "build-rpm.sh failed"
    fi
else
    skip "rpmbuild not installed: copyd.spec not built (Debian: apt-get install rpm)"
fi

exit $fail
