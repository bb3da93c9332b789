#!/bin/sh
# Check dbus/org.example.Copyd1.conf and dbus/org.example.Copyd1.service
# against a real dbus-daemon, on a throwaway bus that mirrors the default
# system-bus policy (deny own, deny method calls unless a .conf punches a hole).
#
# Needs: root (to test "only root may own" and to run as another user),
# dbus-daemon, dbus-send, dbus-test-tool (Debian: dbus-tests), setpriv.
# Checks:
#   1. root may own org.example.Copyd1; an unprivileged user (nobody) may not;
#   2. nobody may call Manager, Job, Properties, Introspectable, Peer and
#      ObjectManager methods on it; an interface not listed is refused;
#   3. the activation file parses and names org.example.Copyd1 (on a
#      non-system bus, activating it runs Exec=, which fails because the
#      binary is not installed: the error says so, which proves the file was
#      found and read);
#   4. with COPYD_BIN=/path/to/copyd (e.g. target/release/copyd): a call from
#      nobody activates that real copyd (as root, --system, with
#      packaging/config.toml), which takes the name and answers ListJobs.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
conf="$here/org.example.Copyd1.conf"
svc="$here/org.example.Copyd1.service"
name=org.example.Copyd1

for t in dbus-daemon dbus-send dbus-test-tool setpriv; do
    command -v "$t" >/dev/null || { echo "check-policy: missing $t" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "check-policy: must run as root" >&2; exit 2; }

tmp=$(mktemp -d)
chmod 755 "$tmp"
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

mkdir "$tmp/system.d" "$tmp/services"
cp "$conf" "$tmp/system.d/"
cp "$svc" "$tmp/services/"
cat > "$tmp/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>copyd-test</type>
  <listen>unix:path=$tmp/bus</listen>
  <auth>EXTERNAL</auth>
  <servicedir>$tmp/services</servicedir>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <includedir>$tmp/system.d</includedir>
</busconfig>
CONF

DBUS_SYSTEM_BUS_ADDRESS="unix:path=$tmp/bus" \
    dbus-daemon --config-file="$tmp/bus.conf" --nofork --nopidfile >"$tmp/daemon.log" 2>&1 &
pids="$pids $!"
i=0; while [ ! -S "$tmp/bus" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -S "$tmp/bus" ] || { echo "check-policy: bus did not start:"; cat "$tmp/daemon.log"; exit 1; }
chmod 777 "$tmp/bus"
addr="unix:path=$tmp/bus"
fail=0
ok()  { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fail=1; }

as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }

# --- 1. ownership
out=$(as_nobody dbus-send --bus="$addr" --print-reply --dest=org.freedesktop.DBus \
      /org/freedesktop/DBus org.freedesktop.DBus.RequestName string:$name uint32:0 2>&1 || true)
case "$out" in *AccessDenied*) ok "nobody may not own $name";; *) bad "nobody owned $name: $out";; esac

# root holds the name with an echo service that answers every method call.
DBUS_SESSION_BUS_ADDRESS="$addr" dbus-test-tool echo --session --name=$name >/dev/null 2>&1 &
pids="$pids $!"
i=0
while [ $i -lt 50 ]; do
    if dbus-send --bus="$addr" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
         org.freedesktop.DBus.NameHasOwner string:$name 2>/dev/null | grep -q 'boolean true'; then break; fi
    sleep 0.1; i=$((i+1))
done
[ $i -lt 50 ] && ok "root owns $name" || bad "root could not own $name"

# --- 2. sending, as nobody
call() { # interface.member
    as_nobody dbus-send --bus="$addr" --print-reply --dest=$name /org/example/Copyd1 "$1" 2>&1 || true
}
for m in org.example.Copyd1.Manager.ListJobs org.example.Copyd1.Job.Cancel \
         org.freedesktop.DBus.Properties.GetAll org.freedesktop.DBus.Introspectable.Introspect \
         org.freedesktop.DBus.Peer.Ping org.freedesktop.DBus.ObjectManager.GetManagedObjects; do
    out=$(call "$m")
    case "$out" in "method return"*) ok "nobody may call $m";; *) bad "nobody may not call $m: $out";; esac
done
out=$(call org.example.Other.Thing)
case "$out" in *AccessDenied*) ok "an unlisted interface is refused";; *) bad "unlisted interface allowed: $out";; esac

# --- 3. activation file
kill $(echo $pids | awk '{print $NF}') 2>/dev/null || true
i=0
while dbus-send --bus="$addr" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.NameHasOwner string:$name 2>/dev/null | grep -q 'boolean true' && [ $i -lt 50 ]; do
    sleep 0.1; i=$((i+1))
done
out=$(dbus-send --bus="$addr" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.ListActivatableNames 2>&1)
case "$out" in *"\"$name\""*) ok "$name is activatable";; *) bad "$name not activatable: $out";; esac
out=$(dbus-send --bus="$addr" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.StartServiceByName string:$name uint32:0 2>&1 || true)
case "$out" in
    *"/usr/libexec/copyd/copyd"*|*Spawn*) ok "activation runs Exec= ($(echo "$out" | head -1))";;
    *"uint32 1"*) ok "activation started an installed copyd";;
    *) bad "activation: $out";;
esac

# --- 4. the real daemon, activated by an unprivileged caller's call
if [ -n "${COPYD_BIN:-}" ]; then
    [ -x "$COPYD_BIN" ] || { bad "COPYD_BIN=$COPYD_BIN is not executable"; exit 1; }
    mkdir "$tmp/state"
    sed "s|^Exec=.*|Exec=$COPYD_BIN --system --config $here/../packaging/config.toml --state-dir $tmp/state|" \
        "$svc" > "$tmp/services/org.example.Copyd1.service"
    dbus-send --bus="$addr" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.ReloadConfig >/dev/null
    # copyd --system finds this bus through DBUS_SYSTEM_BUS_ADDRESS, which it
    # inherits from dbus-daemon (started with it set, below).
    out=$(as_nobody dbus-send --bus="$addr" --print-reply --reply-timeout=15000 --dest=$name \
          /org/example/Copyd1 org.example.Copyd1.Manager.ListJobs 2>&1 || true)
    case "$out" in "method return"*) ok "nobody's ListJobs activated the real copyd and got a reply";;
                   *) bad "real copyd: $out"; tail -20 "$tmp/daemon.log";; esac
    out=$(as_nobody dbus-send --bus="$addr" --print-reply --dest=$name /org/example/Copyd1 \
          org.freedesktop.DBus.Properties.Get string:org.example.Copyd1.Manager string:Version 2>&1 || true)
    case "$out" in *string*) ok "Version: $(echo "$out" | sed -n 's/.*string "\(.*\)"/\1/p')";; *) bad "Version: $out";; esac
    owner=$(dbus-send --bus="$addr" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
            org.freedesktop.DBus.GetConnectionUnixUser string:$name 2>&1 | sed -n 's/.*uint32 //p')
    [ "$owner" = 0 ] && ok "copyd owns the name as uid 0" || bad "name owner uid: $owner"
    pid=$(dbus-send --bus="$addr" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
          org.freedesktop.DBus.GetConnectionUnixProcessID string:$name 2>/dev/null | sed -n 's/.*uint32 //p')
    [ -n "$pid" ] && pids="$pids $pid"
fi

exit $fail
