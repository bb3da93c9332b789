#!/usr/bin/python3
"""Start a copyd job with Gio and watch its signals to the end.

Usage: watch_job.py --address ADDR [--method Copy|Move] [--recursive]
                    [--option KEY=GVARIANT]... [--timeout SECONDS]
                    SOURCE... DESTINATION

Connects with Gio.DBusConnection.new_for_address_sync (a message-bus
connection to a private bus), subscribes to every org.example.Copyd1.Job
signal under /org/example/Copyd1/jobs *before* calling the method (so no
signal can be missed), calls Manager.<method>, and follows the Progress and
Completed signals of the returned job. It checks what a GUI would rely on:
  - bytes_done, files_done never go backwards,
  - bytes_done <= bytes_total and files_done <= files_total,
  - exactly one Completed arrives, and nothing after it,
and prints "JOB <path>" on stdout as soon as it knows the job, then, at
the end, one JSON object on a line of its own:
  {"job", "progress_count", "completed", "success", "error_name",
   "message", "last_progress", "violations", "state", "signals_before_reply"}
With --files-carry-bytes (every file of the job holds data), also that a
file counted done has its bytes counted: files_done > 0 means bytes_done > 0.
Exit status: 0 when it could watch the job to its end (whatever the
outcome; the caller judges), 2 on usage errors, 3 on D-Bus errors, 4 on
timeout.

Needs python3-gi (Debian: /usr/bin/python3 with python3-gi, gir1.2-glib-2.0).
"""

import argparse
import json
import os
import sys

from gi.repository import Gio, GLib

BUS_NAME = "org.example.Copyd1"
MANAGER_PATH = "/org/example/Copyd1"
MANAGER_IFACE = "org.example.Copyd1.Manager"
JOB_IFACE = "org.example.Copyd1.Job"
JOBS_PREFIX = "/org/example/Copyd1/jobs/"


def path_bytes(p):
    return os.fsencode(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--method", default="Copy", choices=["Copy", "Move"])
    ap.add_argument("--recursive", action="store_true")
    ap.add_argument("--option", action="append", default=[],
                    help="KEY=GVARIANT_TEXT, e.g. start-paused=true")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--files-carry-bytes", action="store_true",
                    help="every file of the job holds bytes: files_done > 0 "
                         "with bytes_done = 0 is then a violation")
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    if len(args.paths) < 2:
        ap.error("need SOURCE... DESTINATION")
    sources, dest = args.paths[:-1], args.paths[-1]

    conn = Gio.DBusConnection.new_for_address_sync(
        args.address,
        Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
        | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
        None, None)

    state = {
        "job": None,
        "progress_count": 0,
        "completed": False,
        "completed_count": 0,
        "success": None,
        "error_name": None,
        "message": None,
        "last_progress": None,
        "violations": [],
        "signals_before_reply": 0,
        "signals_after_completed": 0,
    }
    pending = []  # signals that arrived before we knew our job's path
    loop = GLib.MainLoop()

    def handle(path, member, params):
        if path != state["job"]:
            return
        if state["completed"]:
            state["signals_after_completed"] += 1
            state["violations"].append("%s after Completed" % member)
            return
        if member == "Progress":
            bd, bt, fd, ft, rate, eta = params.unpack()
            state["progress_count"] += 1
            last = state["last_progress"]
            if last is not None:
                if bd < last["bytes_done"]:
                    state["violations"].append(
                        "bytes_done went back: %d -> %d" % (last["bytes_done"], bd))
                if fd < last["files_done"]:
                    state["violations"].append(
                        "files_done went back: %d -> %d" % (last["files_done"], fd))
            if bd > bt:
                state["violations"].append("bytes_done %d > bytes_total %d" % (bd, bt))
            if fd > ft:
                state["violations"].append("files_done %d > files_total %d" % (fd, ft))
            if args.files_carry_bytes and fd > 0 and bd == 0:
                state["violations"].append(
                    "files_done %d with bytes_done 0: files ahead of their bytes" % fd)
            state["last_progress"] = {
                "bytes_done": bd, "bytes_total": bt, "files_done": fd,
                "files_total": ft, "rate": rate, "expected_end_time": eta,
            }
        elif member == "Completed":
            success, error_name, message = params.unpack()
            state["completed"] = True
            state["completed_count"] += 1
            state["success"] = success
            state["error_name"] = error_name
            state["message"] = message
            # Give stray late signals a moment to show up, then stop.
            GLib.timeout_add(300, loop.quit)

    def on_signal(_conn, _sender, path, _iface, member, params):
        if state["job"] is None:
            pending.append((path, member, params))
            return
        handle(path, member, params)

    # Subscribe first: every Job signal from the service's jobs namespace.
    # (signal_subscribe matches an exact object path only, so match on the
    # interface and filter by path here; a path_namespace match rule is added
    # too, so the bus routes exactly these signals to us.)
    conn.signal_subscribe(BUS_NAME, JOB_IFACE, None, None, None,
                          Gio.DBusSignalFlags.NONE, on_signal)
    conn.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus",
                   "org.freedesktop.DBus", "AddMatch",
                   GLib.Variant("(s)", ("type='signal',interface='%s',path_namespace='%s'"
                                        % (JOB_IFACE, JOBS_PREFIX.rstrip("/")),)),
                   None, Gio.DBusCallFlags.NONE, -1, None)

    opts = {}
    if args.recursive:
        opts["recursive"] = GLib.Variant("b", True)
    for o in args.option:
        k, _, v = o.partition("=")
        opts[k] = GLib.Variant.parse(None, v, None, None)
    params = GLib.Variant("(aayaya{sv})", (
        [path_bytes(s) for s in sources], path_bytes(dest), opts))
    try:
        reply = conn.call_sync(BUS_NAME, MANAGER_PATH, MANAGER_IFACE, args.method,
                               params, GLib.VariantType("(o)"),
                               Gio.DBusCallFlags.NONE, 60000, None)
    except GLib.Error as e:
        state["dbus_error"] = Gio.DBusError.get_remote_error(e) or str(e)
        state["dbus_error_message"] = e.message
        print(json.dumps(state))
        return 3
    state["job"] = reply.unpack()[0]
    # The job path first, on a line of its own, so a caller can act on the
    # job (Cancel, Resume...) while this script watches it.
    print("JOB " + state["job"], flush=True)
    if not state["job"].startswith(JOBS_PREFIX):
        state["violations"].append("job path %r not under %s" % (state["job"], JOBS_PREFIX))

    # Signals that came in before the reply was processed.
    def drain_pending():
        for (p, m, pr) in pending:
            if p == state["job"]:
                state["signals_before_reply"] += 1
            handle(p, m, pr)
        pending.clear()
        return False
    GLib.idle_add(drain_pending)

    timed_out = []

    def on_timeout():
        timed_out.append(True)
        loop.quit()
        return False
    GLib.timeout_add(int(args.timeout * 1000), on_timeout)
    loop.run()

    # The final State, as a property read.
    try:
        v = conn.call_sync(BUS_NAME, state["job"], "org.freedesktop.DBus.Properties", "Get",
                           GLib.Variant("(ss)", (JOB_IFACE, "State")), GLib.VariantType("(v)"),
                           Gio.DBusCallFlags.NONE, 10000, None)
        state["state"] = v.unpack()[0]
    except GLib.Error as e:
        state["state"] = None
        state["violations"].append("cannot read State: %s" % e.message)
    if state["completed_count"] > 1:
        state["violations"].append("Completed arrived %d times" % state["completed_count"])
    print(json.dumps(state))
    return 4 if timed_out else 0


if __name__ == "__main__":
    sys.exit(main())
