//! copyd on a bus with a default-deny policy, like the real system bus:
//! only dbus/org.example.Copyd1.conf lets clients in. Checks that the
//! policy file lets every client path the contract needs through, and
//! keeps the rest out.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use copyd_tests::busctl::{gdbus_call, gdbus_error_name};
use copyd_tests::cmd::run;
use copyd_tests::tree::{assert_trees_equal, make_tree};
use copyd_tests::{osargs, Policy, TestEnv, MANAGER_IFACE, MANAGER_PATH};

#[test]
fn strict_policy_allows_the_contract() {
    assert!(
        copyd_tests::bus::copyd_policy_file().exists(),
        "dbus/org.example.Copyd1.conf is missing"
    );
    let env = TestEnv::start_with(Policy::Strict);
    let src = env.path("src");
    make_tree(&src, 30, 51);
    let dst = env.path("dst");
    // copyctl: method calls, properties, signals.
    env.copyctl(&osargs!["copy", "-r", &src, &dst])
        .assert_success();
    assert_trees_equal(&src, &dst);
    // Introspection, properties, ObjectManager.
    let b = env.busctl();
    assert!(b.introspect(MANAGER_PATH).contains(MANAGER_IFACE));
    b.get_property(MANAGER_PATH, MANAGER_IFACE, "Version")
        .expect("Version readable");
    b.call_json(
        MANAGER_PATH,
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
        "",
        &[],
    );
    // Peer.Ping.
    let out = gdbus_call(
        env.address(),
        MANAGER_PATH,
        "org.freedesktop.DBus.Peer.Ping",
        &[],
    );
    out.assert_success();
    // Signals reach a Gio client (Completed), on a job it starts.
    let w = copyd_tests::gio::WatchJob::spawn(
        env.address(),
        &osargs!["--recursive", &src, env.path("dst2")],
    );
    let r = w.wait(Duration::from_secs(120));
    assert_eq!(r.json["success"], true, "{:#}", r.json);
    assert_trees_equal(&src, &env.path("dst2"));
}

#[test]
fn strict_policy_denies_other_interfaces() {
    let env = TestEnv::start_with(Policy::Strict);
    let out = gdbus_call(
        env.address(),
        MANAGER_PATH,
        "org.example.Copyd1.Secret.Backdoor",
        &[],
    );
    assert_eq!(
        gdbus_error_name(&out).as_deref(),
        Some("org.freedesktop.DBus.Error.AccessDenied"),
        "a method on an interface the policy does not list should be refused by the bus:\n{out}"
    );
}

/// Only root may own org.example.Copyd1 (needs root to switch to nobody).
#[test]
fn strict_policy_only_root_owns_the_name() {
    if !rustix::process::getuid().is_root() {
        eprintln!("skipped: needs root to run a client as nobody");
        return;
    }
    let env = TestEnv::start_with(Policy::Strict);
    // Let nobody reach the socket.
    fs::set_permissions(env.bus.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(Command::new("setpriv").args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "gdbus",
        "call",
        "--address",
        env.address(),
        "--dest",
        "org.freedesktop.DBus",
        "--object-path",
        "/org/freedesktop/DBus",
        "--method",
        "org.freedesktop.DBus.RequestName",
        "org.example.Copyd1",
        "4",
    ]));
    assert_eq!(
        gdbus_error_name(&out).as_deref(),
        Some("org.freedesktop.DBus.Error.AccessDenied"),
        "nobody could ask for org.example.Copyd1:\n{out}"
    );
    // ...while nobody may still use copyd.
    let out = run(Command::new("setpriv").args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "gdbus",
        "call",
        "--address",
        env.address(),
        "--dest",
        "org.example.Copyd1",
        "--object-path",
        MANAGER_PATH,
        "--method",
        "org.freedesktop.DBus.Properties.Get",
        MANAGER_IFACE,
        "Version",
    ]));
    out.assert_success();
}
