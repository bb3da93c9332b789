#!/usr/bin/python3
"""Start a copyd copy with on-conflict "ask" and answer its conflicts, as a
desktop file manager's dialog would, with Gio.

Usage: answer_conflicts.py --address ADDR --answer ACTION[:all]...
                           [--timeout SECONDS] SOURCE... DESTINATION

Subscribes to the Job signals before calling Manager.Copy (recursive, with
on-conflict "ask"), then answers each ConflictRaised, in order, with the
next --answer (ACTION:all sets apply_to_all). Prints one JSON object at the
end: {"conflicts": [{"target", "existing", "incoming"}...],
"success", "error_name", "message"}. Exit status: 0 when the job ended, 3
on D-Bus errors, 4 on timeout, 5 when a conflict came with no answer left.

Needs python3-gi (Debian: /usr/bin/python3 with python3-gi).
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--answer", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("paths", nargs="+")
    args = ap.parse_args()
    sources, dest = args.paths[:-1], args.paths[-1]
    answers = list(args.answer)

    conn = Gio.DBusConnection.new_for_address_sync(
        args.address,
        Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
        | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
        None,
        None,
    )
    loop = GLib.MainLoop()
    state = {"job": None, "conflicts": [], "end": None, "exit": 0}

    def on_signal(_conn, _sender, path, _iface, name, params):
        if state["job"] is not None and path != state["job"]:
            return
        if name == "ConflictRaised":
            target, existing, incoming = params.unpack()
            state["conflicts"].append({
                "target": os.fsdecode(bytes(target)),
                "existing": existing,
                "incoming": incoming,
            })
            if not answers:
                state["exit"] = 5
                loop.quit()
                return
            action, _, scope = answers.pop(0).partition(":")
            conn.call_sync(
                BUS_NAME, path, JOB_IFACE, "ResolveConflict",
                GLib.Variant("(sb)", (action, scope == "all")),
                None, Gio.DBusCallFlags.NONE, -1, None)
        elif name == "Completed":
            success, error_name, message = params.unpack()
            state["end"] = {"success": success, "error_name": error_name,
                            "message": message}
            loop.quit()

    conn.signal_subscribe(BUS_NAME, JOB_IFACE, None, None, None,
                          Gio.DBusSignalFlags.NONE, on_signal)
    options = {
        "recursive": GLib.Variant("b", True),
        "on-conflict": GLib.Variant("s", "ask"),
    }
    try:
        reply = conn.call_sync(
            BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "Copy",
            GLib.Variant("(aayaya{sv})", (
                [os.fsencode(s) + b"\0" for s in sources],
                os.fsencode(dest) + b"\0",
                options)),
            GLib.VariantType("(o)"), Gio.DBusCallFlags.NONE, -1, None)
    except GLib.Error as err:
        print(json.dumps({"error": err.message}))
        return 3
    state["job"] = reply.unpack()[0]

    def on_timeout():
        state["exit"] = 4
        loop.quit()
        return False

    GLib.timeout_add(int(args.timeout * 1000), on_timeout)
    loop.run()
    out = {"conflicts": state["conflicts"]}
    out.update(state["end"] or {})
    print(json.dumps(out))
    return state["exit"]


if __name__ == "__main__":
    sys.exit(main())
