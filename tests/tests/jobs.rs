//! Job behaviour beyond a plain copy: a source that vanishes mid-job, the
//! rate limit's accuracy, and a state directory copyd cannot write.

use std::fs;
use std::time::Duration;

use copyd_tests::busctl::Busctl;
use copyd_tests::tree::{assert_trees_equal, make_big_file};
use copyd_tests::{Daemon, Policy, TestBus, TestEnv, MANAGER_IFACE, MANAGER_PATH};

#[test]
fn vanished_source_files_fail_alone_and_are_listed() {
    let env = TestEnv::start();
    let source = env.path("src");
    fs::create_dir_all(source.join("big")).unwrap();
    fs::create_dir_all(source.join("small")).unwrap();
    for i in 0..8 {
        make_big_file(&source.join(format!("big/{i}")), 8 << 20, i);
    }
    for i in 0..20 {
        fs::write(
            source.join(format!("small/{i:02}")),
            format!("small file {i}"),
        )
        .unwrap();
    }
    let target = env.path("dst");
    // Slow, and largest files first: the small ones are copied last.
    let b = env.busctl();
    let job = b.copy(
        &[&source],
        &target,
        &["recursive", "b", "true", "rate-limit", "t", "16000000"],
    );
    b.wait_job_state(&job, Duration::from_secs(30), |_| {
        b.job_u64(&job, "BytesDone") > 0
    });
    for i in 0..5 {
        fs::remove_file(source.join(format!("small/{i:02}"))).unwrap();
    }
    let state = b.wait_job_end(&job, Duration::from_secs(60));
    assert_eq!(state, "failed");
    let failed = b.job_prop(&job, "FailedFiles").to_string();
    for i in 0..5 {
        assert!(
            failed.contains(&format!("small/{i:02}")),
            "small/{i:02} not listed: {failed}"
        );
    }
    let message = b.job_prop(&job, "ErrorMessage").to_string();
    assert!(
        message.contains("5 file(s) could not be copied"),
        "{message}"
    );
    // Everything else was copied, and the copy is in place.
    assert_trees_equal(&source, &target);
}

#[test]
fn rate_limit_holds_within_five_percent() {
    let env = TestEnv::start();
    let source = env.path("big");
    let size: u64 = 200_000_000;
    make_big_file(&source, size, 1);
    let b = env.busctl();
    // 20 MB/s: 10 s.
    let job = b.copy(
        &[&source],
        &env.path("copy"),
        &["rate-limit", "t", "20000000"],
    );
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(60)), "completed");
    let elapsed_us = b.job_u64(&job, "EndTime") - b.job_u64(&job, "StartTime");
    let rate = size as f64 / (elapsed_us as f64 / 1e6);
    eprintln!(
        "rate-limited copy: {:.2} MB/s over {:.2} s",
        rate / 1e6,
        elapsed_us as f64 / 1e6
    );
    assert!(
        (rate / 20e6 - 1.0).abs() <= 0.05,
        "average {:.2} MB/s is not within 5% of 20 MB/s",
        rate / 1e6
    );
}

#[test]
fn an_unwritable_state_directory_degrades_health_and_refuses_jobs() {
    let bus = TestBus::start(Policy::Permissive);
    // A state directory below a regular file can never be created.
    let dir = copyd_tests::scratch_dir("state");
    let blocker = dir.path().join("not-a-directory");
    fs::write(&blocker, b"").unwrap();
    let config = format!("state_dir = \"{}/state\"\n", blocker.display());
    let daemon = Daemon::start_with_config(&bus, Some(&config));
    let b = Busctl::new(bus.address());
    let health = b
        .get_property(MANAGER_PATH, MANAGER_IFACE, "Health")
        .unwrap()
        .to_string();
    assert!(
        health.contains("degraded") && health.contains("not writable"),
        "{health}"
    );
    let src = dir.path().join("file");
    fs::write(&src, b"data").unwrap();
    let out = b.start(
        "Copy",
        &[copyd_tests::busctl::path_bytes(&src)],
        copyd_tests::busctl::path_bytes(&dir.path().join("copy")),
        &[],
    );
    out.assert_failure();
    assert!(
        out.stderr_str().contains("run_without_checkpoints"),
        "{}",
        out.stderr_str()
    );
    assert!(!dir.path().join("copy").exists());
    drop(daemon);

    // With run_without_checkpoints, the same copy runs.
    let config = format!("{config}run_without_checkpoints = true\n");
    let _daemon = Daemon::start_with_config(&bus, Some(&config));
    let job = b.copy(&[&src], &dir.path().join("copy"), &[]);
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(30)), "completed");
    assert_eq!(fs::read(dir.path().join("copy")).unwrap(), b"data");
}

#[test]
fn finished_jobs_leave_the_bus_after_their_retention() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("retention");
    let config = format!(
        "job_retention_seconds = 1\nstate_dir = \"{}\"\n",
        dir.path().join("state").display()
    );
    let _daemon = Daemon::start_with_config(&bus, Some(&config));
    let b = Busctl::new(bus.address());
    let src = dir.path().join("file");
    fs::write(&src, b"data").unwrap();
    let job = b.copy(&[&src], &dir.path().join("copy"), &[]);
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(10)), "completed");
    let id = job.rsplit('/').next().unwrap().to_string();
    let managed = || {
        b.call_json(
            MANAGER_PATH,
            "org.freedesktop.DBus.ObjectManager",
            "GetManagedObjects",
            "",
            &[],
        )
        .to_string()
    };
    assert!(
        managed().contains(&job),
        "a finished job stays listed for a while"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !managed().contains(&job),
        "the job is still listed after its retention"
    );
    let out = b.call(MANAGER_PATH, MANAGER_IFACE, "GetJob", "s", &[id]);
    out.assert_failure();
    // Its checkpoint went with it.
    assert_eq!(
        fs::read_dir(dir.path().join("state/jobs"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".job")
            })
            .count(),
        0
    );
}

#[test]
fn the_global_rate_limit_changes_live_for_those_polkit_lets_configure() {
    use copyd_tests::polkit::{SecureEnv, USER};
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let b = Busctl::new(env.address());
    let rate = || {
        b.get_property(MANAGER_PATH, MANAGER_IFACE, "RateLimit")
            .unwrap()
    };
    assert_eq!(rate(), 0);
    // An ordinary user: configure is auth_admin, so polkit answers with a
    // challenge, and nothing changes.
    let out = env.call_as(
        USER,
        MANAGER_PATH,
        MANAGER_IFACE,
        "SetRateLimit",
        "t",
        &["1000".into()],
    );
    out.assert_failure();
    assert_eq!(rate(), 0);
    // Root may.
    let out = b.call(
        MANAGER_PATH,
        MANAGER_IFACE,
        "SetRateLimit",
        "t",
        &["5000000".into()],
    );
    out.assert_success();
    assert_eq!(rate(), 5_000_000);
    let denials = env.audit_events();
    assert!(
        denials
            .iter()
            .any(|e| e.to_string().contains("org.example.copyd1.configure")),
        "the refused configure is not in the audit log: {denials:?}"
    );
}

/// A job running with copyd's own (root) rights looks up its target's
/// directory once: swapping a symlink into the destination's path while it
/// copies does not redirect what it writes.
#[test]
fn a_destination_swapped_mid_copy_does_not_redirect_a_root_job() {
    let env = TestEnv::start();
    let source = env.path("src");
    fs::create_dir_all(&source).unwrap();
    for i in 0..8 {
        make_big_file(&source.join(format!("f{i}")), 4 << 20, i);
    }
    let parent = env.path("parent");
    let victim = env.path("victim");
    fs::create_dir_all(&parent).unwrap();
    fs::create_dir_all(&victim).unwrap();
    let b = env.busctl();
    // ~4 s at 8 MB/s.
    let job = b.copy(
        &[&source],
        &parent.join("out"),
        &["recursive", "b", "true", "rate-limit", "t", "8000000"],
    );
    b.wait_job_state(&job, Duration::from_secs(30), |_| {
        b.job_u64(&job, "BytesDone") > (4 << 20)
    });
    // Swap: the real directory moves away, a symlink to the victim takes its name.
    let moved = env.path("parent-moved");
    fs::rename(&parent, &moved).unwrap();
    std::os::unix::fs::symlink(&victim, &parent).unwrap();
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(60)), "completed");
    assert_eq!(
        fs::read_dir(&victim).unwrap().count(),
        0,
        "the job wrote through the swapped symlink"
    );
    assert_trees_equal(&source, &moved.join("out"));
}
