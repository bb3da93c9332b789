//! copyd as root, polkitd on the same bus, clients as real users: copyd
//! must act with each caller's own rights, ask polkit for anything beyond
//! them, and survive bad input. (Needs root and polkitd; skips otherwise.)

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use copyd_tests::busctl::{gdbus_error_name, parse_gdbus_object_path, Busctl};
use copyd_tests::polkit::{ensure_user, SecureEnv, ADMIN, OTHER, USER};
use copyd_tests::tree::copyd_temp_leftovers;
use copyd_tests::{JOB_IFACE, MANAGER_IFACE, MANAGER_PATH};

mod raw_client;

const E: &str = "org.example.Copyd1.Error.";

fn mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A root-only file (0600 root) in the scratch space.
fn root_secret(env: &SecureEnv, name: &str) -> PathBuf {
    let secret = env.path(name);
    fs::write(&secret, b"root only secret\n").unwrap();
    mode(&secret, 0o600);
    secret
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The error of a call that started a job: the call's own error, or else
/// the ErrorName the job ended with ("" if it completed).
fn outcome(env: &SecureEnv, out: &copyd_tests::CmdOutput) -> String {
    if let Some(name) = gdbus_error_name(out) {
        return name;
    }
    assert!(out.success(), "{out}");
    let job = parse_gdbus_object_path(&out.stdout_str());
    let b = Busctl::new(env.address());
    let state = b.wait_job_end(&job, Duration::from_secs(60));
    let name = b
        .job_prop(&job, "ErrorName")
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        (state == "completed") == name.is_empty(),
        "job {job} ended {state} with error {name:?}"
    );
    name
}

#[test]
fn a_user_cannot_copy_a_root_only_file_out() {
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let out_dir = env.user_dir(USER, "user");
    // A root-only file in a directory the user may search...
    let secret = root_secret(&env, "secret");
    let r = env.gdbus_start_as(USER, "Copy", &[&secret], &out_dir.join("stolen"), "{}");
    assert_eq!(outcome(&env, &r), format!("{E}PermissionDenied"), "{r}");
    // ...and one in a root-only directory (0700).
    let locked = env.path("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("inner"), b"inner secret").unwrap();
    mode(&locked, 0o700);
    let r = env.gdbus_start_as(
        USER,
        "Copy",
        &[&locked.join("inner")],
        &out_dir.join("stolen2"),
        "{}",
    );
    assert_eq!(outcome(&env, &r), format!("{E}PermissionDenied"), "{r}");
    // A tree containing it.
    let r = env.gdbus_start_as(
        USER,
        "Copy",
        &[&locked],
        &out_dir.join("tree"),
        "{'recursive': <true>}",
    );
    assert_eq!(outcome(&env, &r), format!("{E}PermissionDenied"), "{r}");
    assert_eq!(
        entries(&out_dir),
        Vec::<String>::new(),
        "something was created"
    );
    // And a plan (a dry run) does not reveal it either.
    let r = env.gdbus_start_as(
        USER,
        "Plan",
        &[&locked],
        &out_dir.join("tree"),
        "{'recursive': <true>}",
    );
    assert_eq!(
        gdbus_error_name(&r).as_deref(),
        Some(&*format!("{E}PermissionDenied")),
        "{r}"
    );
    // The same copy as the user's own file works: the switch is not a
    // blanket refusal.
    let public = env.path("public");
    fs::write(&public, b"anyone may read this").unwrap();
    mode(&public, 0o644);
    let mine = out_dir.join("mine");
    env.copyctl_as(USER, &copyd_tests::osargs!["copy", &public, &mine])
        .assert_success();
    let meta = fs::metadata(&mine).unwrap();
    use std::os::unix::fs::MetadataExt;
    let ids = ensure_user(USER);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (ids.uid, ids.gid),
        "the copy belongs to the caller"
    );
}

#[test]
fn a_user_cannot_write_into_a_root_directory() {
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let own = env.user_dir(USER, "user");
    let file = own.join("mine.txt");
    fs::write(&file, b"user data").unwrap();
    copyd_tests::polkit::chown(&file, ensure_user(USER));
    let rootdir = env.path("rootdir");
    fs::create_dir(&rootdir).unwrap();
    mode(&rootdir, 0o755);
    for (method, options) in [
        ("Copy", "{}"),
        ("Move", "{}"),
        ("Copy", "{'on-conflict': <'overwrite'>}"),
    ] {
        let r = env.gdbus_start_as(USER, method, &[&file], &rootdir.join("planted"), options);
        assert_eq!(
            outcome(&env, &r),
            format!("{E}PermissionDenied"),
            "{method}: {r}"
        );
    }
    let r = env.gdbus_start_as(
        USER,
        "Copy",
        &[&own],
        &rootdir.join("tree"),
        "{'recursive': <true>}",
    );
    assert_eq!(outcome(&env, &r), format!("{E}PermissionDenied"), "{r}");
    assert_eq!(
        entries(&rootdir),
        Vec::<String>::new(),
        "something was created in the root directory"
    );
    assert!(file.exists(), "the move's source must stay");
    // Setuid bits never survive an unprivileged copy.
    let suid = own.join("suid");
    fs::write(&suid, b"#!/bin/sh\n").unwrap();
    copyd_tests::polkit::chown(&suid, ensure_user(USER));
    mode(&suid, 0o4755);
    env.copyctl_as(
        USER,
        &copyd_tests::osargs!["copy", &suid, own.join("suid-copy")],
    )
    .assert_success();
    let m = fs::metadata(own.join("suid-copy"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(m, 0o755, "setuid bit kept: {m:o}");
    // A FIFO is made anew (no privilege needed), the user's own.
    let fifo = own.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let r = env.gdbus_start_as(USER, "Copy", &[&fifo], &own.join("fifo2"), "{}");
    assert_eq!(outcome(&env, &r), "", "{r}");
    let copied = fs::symlink_metadata(own.join("fifo2")).unwrap();
    assert!(copied.file_type().is_fifo());
    assert_eq!(copied.uid(), ensure_user(USER).uid);
    // A device node is not, even the user's own: its copy would give them
    // the device. The kernel refuses the job's thread (no CAP_MKNOD).
    let null = own.join("null");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &null,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    copyd_tests::polkit::chown(&null, ensure_user(USER));
    let r = env.gdbus_start_as(USER, "Copy", &[&null], &own.join("null2"), "{}");
    assert_eq!(outcome(&env, &r), format!("{E}PermissionDenied"), "{r}");
    assert!(fs::symlink_metadata(own.join("null2")).is_err());
}

#[test]
fn only_the_owner_or_an_authorized_admin_controls_a_job() {
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let own = env.user_dir(USER, "user");
    fs::write(own.join("a"), b"a").unwrap();
    copyd_tests::polkit::chown(&own.join("a"), ensure_user(USER));
    let start = |name: &str| {
        let r = env.gdbus_start_as(
            USER,
            "Copy",
            &[&own.join("a")],
            &own.join(name),
            "{'start-paused': <true>}",
        );
        assert!(r.success(), "{r}");
        parse_gdbus_object_path(&r.stdout_str())
    };
    let job1 = start("b");
    let job2 = start("c");
    let b = Busctl::new(env.address());
    for method in ["Cancel", "Resume", "Pause"] {
        let r = env.gdbus_as(
            OTHER,
            &job1,
            &format!("{JOB_IFACE}.{method}"),
            &["@a{sv} {}".into()],
        );
        let name = gdbus_error_name(&r).unwrap_or_default();
        assert!(
            name == format!("{E}NotAuthorizedCanObtain") || name == format!("{E}NotAuthorized"),
            "another user's {method}: {r}"
        );
    }
    assert_eq!(b.job_state(&job1), "paused");
    // The owner can.
    env.gdbus_as(
        USER,
        &job1,
        &format!("{JOB_IFACE}.Cancel"),
        &["@a{sv} {}".into()],
    )
    .assert_success();
    assert_eq!(b.wait_job_end(&job1, Duration::from_secs(30)), "cancelled");
    // The admin the test rules authorize can.
    env.gdbus_as(
        ADMIN,
        &job2,
        &format!("{JOB_IFACE}.Cancel"),
        &["@a{sv} {}".into()],
    )
    .assert_success();
    assert_eq!(b.wait_job_end(&job2, Duration::from_secs(30)), "cancelled");
    assert!(!own.join("b").exists() && !own.join("c").exists());
    // The audit log has the decisions.
    let events = env.audit_events();
    let ids = ensure_user(OTHER);
    assert!(
        events.iter().any(|e| e["uid"] == ids.uid
            && e["action"] == "org.example.copyd1.manage-other-jobs"
            && e["result"] == "challenge"),
        "no audit event for the refused Cancel: {events:#?}"
    );
    let admin = ensure_user(ADMIN);
    assert!(
        events.iter().any(|e| e["uid"] == admin.uid
            && e["action"] == "org.example.copyd1.manage-other-jobs"
            && e["result"] == "authorized"),
        "no audit event for the admin's Cancel"
    );
}

#[test]
fn privileged_needs_polkit_yes() {
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let locked = env.path("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("secret"), b"root only secret\n").unwrap();
    mode(&locked.join("secret"), 0o600);
    mode(&locked, 0o700);
    let admin_dir = env.user_dir(ADMIN, "admin");
    let user_dir = env.user_dir(USER, "user");
    // Without the rule: a challenge, and nothing copied.
    let r = env.gdbus_start_as(
        USER,
        "Copy",
        &[&locked.join("secret")],
        &user_dir.join("got"),
        "{'privileged': <true>}",
    );
    assert_eq!(
        gdbus_error_name(&r).as_deref(),
        Some(&*format!("{E}NotAuthorizedCanObtain")),
        "{r}"
    );
    let r = env.gdbus_start_as(
        USER,
        "Plan",
        &[&locked.join("secret")],
        &user_dir.join("got"),
        "{'privileged': <true>}",
    );
    assert_eq!(
        gdbus_error_name(&r).as_deref(),
        Some(&*format!("{E}NotAuthorizedCanObtain")),
        "{r}"
    );
    assert!(entries(&user_dir).is_empty());
    // With it: the copy runs as root.
    let r = env.gdbus_start_as(
        ADMIN,
        "Copy",
        &[&locked.join("secret")],
        &admin_dir.join("got"),
        "{'privileged': <true>}",
    );
    assert_eq!(outcome(&env, &r), "", "{r}");
    assert_eq!(
        fs::read(admin_dir.join("got")).unwrap(),
        b"root only secret\n"
    );
    // Without the option the same admin is just a user.
    let r = env.gdbus_start_as(
        ADMIN,
        "Copy",
        &[&locked.join("secret")],
        &admin_dir.join("got2"),
        "{}",
    );
    assert_eq!(outcome(&env, &r), format!("{E}PermissionDenied"), "{r}");
    let admin = ensure_user(ADMIN);
    let events = env.audit_events();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "privileged-job" && e["uid"] == admin.uid),
        "no privileged-job audit event: {events:#?}"
    );
    let user = ensure_user(USER);
    assert!(events.iter().any(|e| e["uid"] == user.uid
        && e["action"] == "org.example.copyd1.copy-privileged"
        && e["result"] == "challenge"));
}

/// A client that sends Copy and disconnects at once (no reply expected) is
/// either refused (its credentials cannot be looked up any more) or served
/// as itself; never as root.
#[test]
fn a_client_that_disconnects_at_once_is_never_root() {
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let secret = root_secret(&env, "secret");
    let own = env.user_dir(USER, "user");
    let user = ensure_user(USER);
    // Even rounds: the call carries NO_REPLY_EXPECTED and busctl exits at
    // once. Odd rounds: a normal call whose busctl is killed after 0-60 ms
    // (before, while or after copyd looks at it; it may also die before
    // sending anything).
    let rounds = 40;
    let mut no_reply = 0;
    for i in 0..rounds {
        use copyd_tests::busctl::{aay_args, ay_args, path_bytes};
        let mut args: Vec<String> = vec![
            "call".into(),
            copyd_tests::BUS_NAME.into(),
            MANAGER_PATH.into(),
            MANAGER_IFACE.into(),
            "Copy".into(),
            "aayaya{sv}".into(),
        ];
        args.extend(aay_args(&[path_bytes(&secret)]));
        args.extend(ay_args(path_bytes(&own.join(format!("stolen-{i}")))));
        args.push("0".into());
        if i % 2 == 0 {
            args.insert(0, "--expect-reply=no".into());
            env.busctl_as(USER, &args).assert_success();
            no_reply += 1;
        } else {
            let mut c = env.command_as(USER, "timeout");
            c.args(["-s", "KILL", &format!("0.0{}", (i / 2) % 7), "busctl"])
                .arg(format!("--address={}", env.address()))
                .args(&args);
            copyd_tests::cmd::run_timeout(&mut c, Duration::from_secs(30));
        }
    }
    // Let copyd handle them all: wait until every job it made has ended
    // and nothing new happened for a second.
    let b = Busctl::new(env.address());
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut jobs, mut denied);
    let mut last = (usize::MAX, usize::MAX, Instant::now());
    loop {
        let listed = b.call_json(MANAGER_PATH, MANAGER_IFACE, "ListJobs", "", &[]);
        jobs = listed["data"][0].as_array().cloned().unwrap_or_default();
        let events = env.audit_events();
        // Refused before a job existed: the caller could not be looked up
        // (kind "denied"), or polkit could not find the subject any more.
        denied = events
            .iter()
            .filter(|e| {
                e["kind"] == "denied"
                    || (e["kind"] == "authorization" && e["result"] != "authorized")
            })
            .count();
        let done = jobs.iter().all(|j| {
            let state = b.job_state(j.as_str().unwrap());
            ["completed", "failed", "cancelled"].contains(&state.as_str())
        });
        if (jobs.len(), denied) != (last.0, last.1) {
            last = (jobs.len(), denied, Instant::now());
        }
        if done && jobs.len() + denied >= no_reply && last.2.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs and {denied} denials of {rounds} calls",
            jobs.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for j in &jobs {
        let j = j.as_str().unwrap();
        assert_eq!(
            b.job_u64(j, "StartedByUID"),
            user.uid as u64,
            "job {j} is not the user's"
        );
        assert_ne!(
            b.job_state(j),
            "completed",
            "job {j} copied a root-only file"
        );
    }
    let got: Vec<String> = entries(&own);
    assert!(got.is_empty(), "created: {got:?}");
    eprintln!(
        "{rounds} disconnecting calls: {} ran as uid {} and failed, {denied} were refused",
        jobs.len(),
        user.uid
    );
    let mut env = env;
    assert!(env.daemon.is_running());
}

/// Malformed calls get errors; copyd stays up.
#[test]
fn malformed_calls_are_errors_and_copyd_survives() {
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let own = env.user_dir(USER, "user");
    // Wrong signature.
    let r = env.busctl_as(
        USER,
        &[
            "call",
            copyd_tests::BUS_NAME,
            MANAGER_PATH,
            MANAGER_IFACE,
            "Copy",
            "sss",
            "a",
            "b",
            "c",
        ],
    );
    assert!(!r.success() && !r.timed_out, "{r}");
    // An unknown option.
    let r = env.gdbus_start_as(
        USER,
        "Copy",
        &[Path::new("/etc/hostname")],
        &own.join("x"),
        "{'frobnicate': <true>}",
    );
    assert_eq!(
        gdbus_error_name(&r).as_deref(),
        Some(&*format!("{E}InvalidArgument")),
        "{r}"
    );
    // A known option with the wrong type.
    let r = env.gdbus_start_as(
        USER,
        "Copy",
        &[Path::new("/etc/hostname")],
        &own.join("x"),
        "{'privileged': <'yes'>}",
    );
    assert_eq!(
        gdbus_error_name(&r).as_deref(),
        Some(&*format!("{E}InvalidArgument")),
        "{r}"
    );
    // A path of 5000 bytes.
    let long = PathBuf::from(format!("/tmp/{}", "x".repeat(4995)));
    let r = env.gdbus_start_as(USER, "Copy", &[&long], &own.join("x"), "{}");
    let name = gdbus_error_name(&r).unwrap_or_default();
    assert!(
        name == format!("{E}PolicyRefused") || name == format!("{E}InvalidArgument"),
        "{r}"
    );
    // 10^5 sources, in one message no command line could carry.
    let reply = raw_client::on_bus(env.address(), |connection| async move {
        let sources: Vec<Vec<u8>> = (0..100_000)
            .map(|i| format!("/nonexistent/{i}").into_bytes())
            .collect();
        let options: std::collections::HashMap<String, zbus::OwnedVariant> = Default::default();
        connection
            .call_method(
                Some(copyd_tests::BUS_NAME),
                MANAGER_PATH,
                Some(MANAGER_IFACE),
                "Copy",
                &(sources, b"/nonexistent-dest".to_vec(), options),
            )
            .await
            .map(|_| ())
    });
    match reply {
        Err(zbus::Error::MethodError(name, _, _)) => {
            assert!(name.as_str().starts_with(E), "{name}")
        }
        other => panic!("10^5 sources: {other:?}"),
    }
    assert!(copyd_temp_leftovers(&own).is_empty());
    // Still up and answering.
    let mut env = env;
    assert!(env.daemon.is_running(), "copyd died");
    let ping = env.busctl_as(
        USER,
        &[
            "call",
            copyd_tests::BUS_NAME,
            MANAGER_PATH,
            "org.freedesktop.DBus.Peer",
            "Ping",
        ],
    );
    ping.assert_success();
    let v = env.busctl_as(
        USER,
        &[
            "get-property",
            copyd_tests::BUS_NAME,
            MANAGER_PATH,
            MANAGER_IFACE,
            "Version",
        ],
    );
    v.assert_success();
}
