#!/bin/sh
# Check polkit/org.example.copyd1.policy and the rules files:
#   1. xmllint: well-formed and valid against polkit's policyconfig DTD;
#   2. node (if present): both rules files parse and return the expected
#      results for sample subjects, against a stub of the polkit object;
#   3. polkitd (if present and run as root): a real polkitd on a throwaway
#      bus loads the actions (pkaction) and, with the test rules, answers
#      pkcheck as expected for "nobody" and "copyd-test-admin".
# Step 3 installs the .policy into /usr/share/polkit-1/actions and the test
# rules into /etc/polkit-1/rules.d only if those files are not there yet,
# and removes only what it installed. It creates the user copyd-test-admin
# if missing (and leaves it: the end-to-end tests use it).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
policy="$here/org.example.copyd1.policy"
fail=0
ok()  { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fail=1; }
skip() { echo "skip - $*"; }

# --- 1
dtd=/usr/share/polkit-1/policyconfig-1.dtd
if command -v xmllint >/dev/null; then
    if [ -r "$dtd" ]; then
        xmllint --noout --dtdvalid "$dtd" "$policy" && ok "policy valid against $dtd" || bad "policy invalid"
    else
        xmllint --noout "$policy" && ok "policy well-formed (no DTD here)" || bad "policy malformed"
    fi
else
    skip "xmllint missing (apt-get install libxml2-utils)"
fi

# --- 2
if command -v node >/dev/null; then
    node - "$here/rules.d/50-copyd-example.rules" "$here/tests/49-copyd-test.rules" <<'JS' && ok "rules files behave as documented (node)" || bad "rules files (node)"
const fs = require("fs");
function load(file) {
  const rules = [];
  const polkit = { Result: { YES: "yes", NO: "no", AUTH_ADMIN: "auth_admin", NOT_HANDLED: null },
                   addRule: f => rules.push(f), log: () => {} };
  new Function("polkit", fs.readFileSync(file, "utf8"))(polkit);
  return (id, user, groups) => {
    const subj = { user, isInGroup: g => groups.includes(g) };
    for (const r of rules) { const v = r({ id }, subj); if (v !== null && v !== undefined) return v; }
    return null;
  };
}
const ex = load(process.argv[2]), t = load(process.argv[3]);
const A = "org.example.copyd1.";
const cases = [
  [ex, "copy-privileged", "alice", ["copyd-admin"], "yes"],
  [ex, "copy-privileged", "bob", [], null],
  [ex, "manage-other-jobs", "alice", ["copyd-admin"], null],
  [ex, "configure", "alice", ["copyd-admin"], null],
  [t, "copy-privileged", "copyd-test-admin", [], "yes"],
  [t, "manage-other-jobs", "copyd-test-admin", [], "yes"],
  [t, "configure", "copyd-test-admin", [], null],
  [t, "copy-privileged", "nobody", [], null],
];
let bad = 0;
for (const [f, a, u, g, want] of cases) {
  const got = f(A + a, u, g);
  if (got !== want) { console.error(`${a} ${u}: got ${got}, want ${want}`); bad = 1; }
}
process.exit(bad);
JS
else
    skip "node missing: rules files not executed"
fi

# --- 3
polkitd=""
for p in /usr/lib/polkit-1/polkitd /usr/libexec/polkitd /usr/libexec/polkit-1/polkitd; do
    [ -x "$p" ] && polkitd=$p && break
done
if [ -z "$polkitd" ] || [ "$(id -u)" != 0 ] || ! command -v dbus-daemon >/dev/null \
   || ! command -v pkcheck >/dev/null || ! command -v setpriv >/dev/null; then
    skip "polkitd check needs root, polkitd, dbus-daemon, pkcheck, setpriv"
    exit $fail
fi

tmp=$(mktemp -d); chmod 755 "$tmp"
pids=""; installed=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for f in $installed; do rm -f "$f"; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

act=/usr/share/polkit-1/actions/org.example.copyd1.policy
rul=/etc/polkit-1/rules.d/49-copyd-test.rules
if [ ! -e "$act" ]; then cp "$policy" "$act"; installed="$installed $act"; fi
if [ ! -e "$rul" ]; then cp "$here/tests/49-copyd-test.rules" "$rul"; installed="$installed $rul"; fi
# The example rule too, so polkitd's own JavaScript engine must compile it
# (it grants nothing here unless a copyd-admin group exists with members).
exr=/etc/polkit-1/rules.d/50-copyd-example.rules
if [ ! -e "$exr" ]; then cp "$here/rules.d/50-copyd-example.rules" "$exr"; installed="$installed $exr"; fi
cmp -s "$policy" "$act" || echo "note: $act differs from $policy (not ours, left alone)"
id copyd-test-admin >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin copyd-test-admin

cat > "$tmp/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>copyd-polkit-test</type>
  <listen>unix:path=$tmp/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$tmp/bus.conf" --nofork --nopidfile >"$tmp/bus.log" 2>&1 &
pids="$pids $!"
i=0; while [ ! -S "$tmp/bus" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
chmod 777 "$tmp/bus"
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$tmp/bus"
"$polkitd" >"$tmp/polkitd.log" 2>&1 &
pids="$pids $!"
i=0
until pkaction >/dev/null 2>&1 || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done

for a in copy copy-privileged manage-other-jobs configure; do
    if pkaction --action-id "org.example.copyd1.$a" --verbose >"$tmp/pkaction" 2>&1; then
        ok "polkitd knows org.example.copyd1.$a ($(grep implicit "$tmp/pkaction" | awk -F': *' '{printf "%s ", $2}'))"
    else
        bad "polkitd does not know org.example.copyd1.$a: $(cat "$tmp/pkaction")"
    fi
done

# Subjects: a process of each user (no logind session here, so allow_any applies).
check() { # user action expected-exit
    setpriv --reuid="$1" --regid="$(id -g "$1")" --clear-groups sleep 30 &
    p=$!; pids="$pids $p"; sleep 0.2
    rc=0; pkcheck --action-id "org.example.copyd1.$2" --process "$p" >/dev/null 2>&1 || rc=$?
    kill "$p" 2>/dev/null || true
    if [ "$rc" = "$3" ]; then ok "pkcheck $1 $2 -> $rc"; else bad "pkcheck $1 $2 -> $rc, want $3"; fi
}
for r in 49-copyd-test.rules 50-copyd-example.rules; do
    if grep -i "$r" "$tmp/polkitd.log" | grep -qi error; then
        bad "polkitd rejected $r: $(grep -i "$r" "$tmp/polkitd.log")"
    else
        ok "polkitd compiled $r"
    fi
done
grep -qi "finished loading" "$tmp/polkitd.log" || echo "note: polkitd log: $(cat "$tmp/polkitd.log")"
check nobody copy 0
check nobody copy-privileged 2          # auth_admin: challenge, no agent
check nobody manage-other-jobs 2
check nobody configure 2
check copyd-test-admin copy-privileged 0
check copyd-test-admin manage-other-jobs 0
check copyd-test-admin configure 2
exit $fail
