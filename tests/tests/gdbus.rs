//! copyd driven by gdbus: bytestrings b'...' (with GLib's trailing NUL),
//! GVariant options, and the D-Bus error names of bad requests.

use std::time::Duration;

use copyd_tests::busctl::{
    gdbus_call, gdbus_error_name, gvariant_bytestring, parse_gdbus_object_path,
};
use copyd_tests::cases::{bad_cases, gdbus_args};
use copyd_tests::tree::{assert_trees_equal, make_tree, snapshot};
use copyd_tests::{TestEnv, ERROR_PREFIX, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH};

#[test]
fn gdbus_copy_tree() {
    let env = TestEnv::start();
    let src = env.path("src");
    make_tree(&src, 200, 21);
    let dst = env.path("dst");
    let out = gdbus_call(
        env.address(),
        MANAGER_PATH,
        &format!("{MANAGER_IFACE}.Copy"),
        &[
            format!("[{}]", gvariant_bytestring(&src)),
            gvariant_bytestring(&dst),
            "{'recursive': <true>}".into(),
        ],
    );
    out.assert_success();
    let job = parse_gdbus_object_path(&out.stdout_str());
    let b = env.busctl();
    assert_eq!(
        b.wait_job_end(&job, Duration::from_secs(120)),
        "completed",
        "job {job}: {:?}",
        b.job_prop(&job, "ErrorMessage")
    );
    assert_trees_equal(&src, &dst);

    // Properties through gdbus too.
    let out = gdbus_call(
        env.address(),
        &job,
        "org.freedesktop.DBus.Properties.Get",
        &[format!("'{JOB_IFACE}'"), "'State'".into()],
    );
    out.assert_success();
    assert!(out.stdout_str().contains("'completed'"), "{out}");
}

/// Every bad request fails with its org.example.Copyd1.Error.* name and
/// changes nothing on disk.
#[test]
fn gdbus_bad_input_error_names() {
    let env = TestEnv::start();
    make_tree(&env.path("src"), 20, 22);
    let before = snapshot(env.work.path());
    let mut problems = Vec::new();
    for case in bad_cases(env.work.path()) {
        let out = gdbus_call(
            env.address(),
            MANAGER_PATH,
            &format!("{MANAGER_IFACE}.Copy"),
            &gdbus_args(&case),
        );
        let name = gdbus_error_name(&out);
        let ok = !out.success()
            && name.as_deref().is_some_and(|n| {
                case.errors
                    .iter()
                    .any(|e| n == format!("{ERROR_PREFIX}{e}"))
            });
        if !ok {
            problems.push(format!(
                "{}: wanted {:?}, got {name:?}:\n{out}",
                case.what, case.errors
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
        let now = snapshot(env.work.path());
        if now != before {
            let new: Vec<_> = now.keys().filter(|k| !before.contains_key(*k)).collect();
            problems.push(format!(
                "{}: the disk changed; new entries: {new:?}",
                case.what
            ));
            for k in new {
                let p = env.work.path().join(k);
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Unknown jobs and unknown methods.
#[test]
fn gdbus_not_found_errors() {
    let env = TestEnv::start();
    let out = gdbus_call(
        env.address(),
        MANAGER_PATH,
        &format!("{MANAGER_IFACE}.GetJob"),
        &["'no-such-job'".into()],
    );
    assert_eq!(
        gdbus_error_name(&out).as_deref(),
        Some("org.example.Copyd1.Error.NotFound"),
        "{out}"
    );
    // Same for Move with a missing source.
    let out = gdbus_call(
        env.address(),
        MANAGER_PATH,
        &format!("{MANAGER_IFACE}.Move"),
        &[
            format!("[{}]", gvariant_bytestring(&env.path("nope"))),
            gvariant_bytestring(&env.path("dst")),
            "@a{sv} {}".into(),
        ],
    );
    assert_eq!(
        gdbus_error_name(&out).as_deref(),
        Some("org.example.Copyd1.Error.NotFound"),
        "{out}"
    );
    assert!(!env.path("dst").exists());
}
