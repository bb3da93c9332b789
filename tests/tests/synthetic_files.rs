//! A privileged copy of a procfs file (st_size 0) completes with its
//! contents, as cp's would, and the job's counters agree with them.
//! (copyctl has no option for a privileged job; busctl asks for one.)

use std::fs;
use std::path::Path;
use std::time::Duration;

use copyd_tests::bus::{Policy, TestBus};
use copyd_tests::daemon::{config_toml, Daemon};
use copyd_tests::{osargs, TestEnv};

fn cat(path: &Path) -> Vec<u8> {
    let out = std::process::Command::new("cat")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn a_privileged_copy_of_proc_version_is_whole() {
    assert!(
        rustix::process::geteuid().is_root(),
        "a privileged job from this test needs root"
    );
    let env = TestEnv::start();
    let source = Path::new("/proc/version");
    let copy = env.path("version");
    let b = env.busctl();
    let job = b.copy(&[source], &copy, &["privileged", "b", "true"]);
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(60)), "completed");
    let want = cat(source);
    assert!(!want.is_empty());
    assert_eq!(fs::read(&copy).unwrap(), want);
    assert_eq!(b.job_u64(&job, "BytesDone"), want.len() as u64);
    assert_eq!(b.job_u64(&job, "BytesTotal"), want.len() as u64);
    assert_eq!(b.job_u64(&job, "FilesDone"), 1);
}

/// Where the security rules leave /proc to any caller, copyctl's copy of
/// /proc/version is whole too.
#[test]
fn copyctl_copies_proc_version_whole() {
    let bus = TestBus::start(Policy::Permissive);
    let state = copyd_tests::scratch_dir("state");
    let config = format!(
        "{}\n[security]\nrequire_privilege_for_system = false\n",
        config_toml(state.path())
    );
    let _daemon = Daemon::start_with_config(&bus, Some(&config));
    let work = copyd_tests::scratch_dir("work");
    let copy = work.path().join("version");
    let out = copyd_tests::cmd::copyctl(
        bus.address(),
        &osargs!["--json", "copy", "/proc/version", &copy],
    );
    out.assert_success();
    let want = cat(Path::new("/proc/version"));
    assert_eq!(fs::read(&copy).unwrap(), want, "{out}");
    let job = out.json();
    assert_eq!(job["state"], "completed", "{out}");
    assert_eq!(job["bytes_done"].as_u64(), Some(want.len() as u64), "{out}");
    assert_eq!(job["bytes_total"], job["bytes_done"], "{out}");
}
