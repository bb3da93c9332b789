//! The queue: a concurrency limit, priority before arrival, one job at a
//! time per disk, and paused jobs giving their slot back.

use std::fs;
use std::time::Duration;

use copyd_tests::busctl::Busctl;
use copyd_tests::tree::make_big_file;
use copyd_tests::{Daemon, Policy, TestBus, MANAGER_IFACE, MANAGER_PATH};

fn config(dir: &std::path::Path, extra: &str) -> String {
    format!(
        "max_concurrent_jobs = {extra}\njob_retention_seconds = 600\nstate_dir = \"{}\"\n",
        dir.join("state").display()
    )
}

fn manager_u32(b: &Busctl, name: &str) -> u64 {
    b.get_property(MANAGER_PATH, MANAGER_IFACE, name)
        .unwrap()
        .as_u64()
        .unwrap()
}

/// A slow copy (rate-limited to 4 MB/s) of a 40 MB file.
fn slow_copy(b: &Busctl, dir: &std::path::Path, name: &str, extra: &[&str]) -> String {
    let source = dir.join(format!("{name}.src"));
    if !source.exists() {
        make_big_file(&source, 40_000_000, 1);
    }
    let mut opts = vec!["rate-limit", "t", "4000000"];
    opts.extend_from_slice(extra);
    b.copy(&[&source], &dir.join(format!("{name}.copy")), &opts)
}

#[test]
fn limit_priority_and_paused_jobs_giving_their_slot_back() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("sched");
    let _daemon = Daemon::start_with_config(&bus, Some(&config(dir.path(), "1")));
    let b = Busctl::new(bus.address());

    let a = slow_copy(&b, dir.path(), "a", &[]);
    b.wait_job_state(&a, Duration::from_secs(10), |s| s == "running");
    let low = slow_copy(&b, dir.path(), "low", &[]);
    let high = slow_copy(&b, dir.path(), "high", &["priority", "i", "5"]);
    assert_eq!(b.job_state(&low), "queued");
    assert_eq!(b.job_state(&high), "queued");
    assert_eq!(manager_u32(&b, "ActiveJobs"), 1);
    assert_eq!(manager_u32(&b, "QueuedJobs"), 2);

    // Pausing the running job frees its slot: the higher priority goes next,
    // although it came later.
    b.pause(&a).assert_success();
    b.wait_job_state(&high, Duration::from_secs(10), |s| s == "running");
    assert_eq!(b.job_state(&low), "queued");
    // Resumed, the paused job queues again instead of running beside it.
    b.resume(&a).assert_success();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        b.job_state(&a),
        "queued",
        "a resumed job must wait for a slot"
    );

    for job in [&a, &high, &low] {
        b.cancel(job).assert_success();
    }
    for job in [&a, &high, &low] {
        assert_eq!(b.wait_job_end(job, Duration::from_secs(20)), "cancelled");
    }
}

#[test]
fn one_job_per_disk_but_other_disks_run_alongside() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("sched-disk");
    let _daemon = Daemon::start_with_config(&bus, Some(&config(dir.path(), "4")));
    let b = Busctl::new(bus.address());
    // A tmpfs has no block device: a disk of its own.
    let tmpfs = dir.path().join("tmpfs");
    fs::create_dir(&tmpfs).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=200m", "copyd-test"])
        .arg(&tmpfs)
        .status()
        .unwrap()
        .success();
    assert!(mounted, "mounting a tmpfs needs root");
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.0)
                .status();
        }
    }
    let _unmount = Unmount(&tmpfs);

    let first = slow_copy(&b, dir.path(), "first", &[]);
    b.wait_job_state(&first, Duration::from_secs(10), |s| s == "running");
    let same_disk = slow_copy(&b, dir.path(), "second", &[]);
    let other_disk = slow_copy(&b, &tmpfs, "third", &[]);
    b.wait_job_state(&other_disk, Duration::from_secs(10), |s| s == "running");
    assert_eq!(
        b.job_state(&same_disk),
        "queued",
        "two jobs on one disk ran at once"
    );
    for job in [&first, &same_disk, &other_disk] {
        b.cancel(job).assert_success();
        b.wait_job_end(job, Duration::from_secs(20));
    }
}
