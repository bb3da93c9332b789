//! What copyd remembers about its jobs: a rate limit set on a job that is
//! not running (or across a restart), the counts of jobs after a restart,
//! and how paused jobs count in the manager's ActiveJobs and QueuedJobs.

use std::fs;
use std::path::Path;
use std::time::Duration;

use copyd_tests::busctl::Busctl;
use copyd_tests::tree::{assert_files_equal, make_big_file, make_tree};
use copyd_tests::{cmd, Daemon, Policy, TestBus, TestEnv, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH};

fn manager_u64(b: &Busctl, name: &str) -> u64 {
    b.get_property(MANAGER_PATH, MANAGER_IFACE, name)
        .unwrap()
        .as_u64()
        .unwrap()
}

fn set_rate_limit(b: &Busctl, job: &str, rate: u64) -> cmd::CmdOutput {
    b.call(job, JOB_IFACE, "SetRateLimit", "t", &[rate.to_string()])
}

/// How long the job's last run took, from its StartTime and EndTime.
fn run_seconds(b: &Busctl, job: &str) -> f64 {
    (b.job_u64(job, "EndTime") - b.job_u64(job, "StartTime")) as f64 / 1e6
}

/// (BytesDone, BytesTotal, FilesDone, FilesTotal)
fn counts(b: &Busctl, job: &str) -> (u64, u64, u64, u64) {
    (
        b.job_u64(job, "BytesDone"),
        b.job_u64(job, "BytesTotal"),
        b.job_u64(job, "FilesDone"),
        b.job_u64(job, "FilesTotal"),
    )
}

/// The options a job's checkpoint keeps (the JSON after the header line).
fn checkpoint_options(state: &Path, job: &str) -> serde_json::Value {
    let id = job.rsplit('/').next().unwrap();
    let bytes = fs::read(state.join(format!("jobs/{id}.job"))).unwrap();
    let body = &bytes[bytes.iter().position(|&b| b == b'\n').unwrap() + 1..];
    serde_json::from_slice::<serde_json::Value>(body).unwrap()["options"].clone()
}

fn config(dir: &Path, extra: &str) -> String {
    format!(
        "job_retention_seconds = 600\nstate_dir = \"{}\"\n{extra}",
        dir.join("state").display()
    )
}

/// A limit set while the job waits (here: paused before it ever ran) is
/// the one it runs with; the engine used to reset it from the job's
/// options when the run began.
#[test]
fn a_rate_limit_set_before_the_job_runs_holds_when_it_runs() {
    let env = TestEnv::start();
    let (source, target) = (env.path("src"), env.path("copy"));
    make_big_file(&source, 4_000_000, 3);
    let b = env.busctl();
    let job = b.copy(&[&source], &target, &["start-paused", "b", "true"]);
    set_rate_limit(&b, &job, 1_000_000).assert_success();
    b.resume(&job).assert_success();
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(60)), "completed");
    // 4 MB at 1 MB/s, less a quarter second of burst; unlimited, well
    // under a second.
    let seconds = run_seconds(&b, &job);
    eprintln!("4 MB at 1 MB/s took {seconds:.2} s");
    assert!(
        seconds >= 3.0,
        "the job ran in {seconds:.2} s: not at its 1 MB/s limit"
    );
    assert_files_equal(&source, &target);
    // What a restart would carry on with.
    assert_eq!(
        checkpoint_options(&env.daemon.state_dir(), &job)["rate_limit"],
        1_000_000,
        "the checkpoint does not keep the new limit"
    );
    // A finished job has no rate to change: a typed error.
    let out = set_rate_limit(&b, &job, 5);
    out.assert_failure();
    assert!(
        out.stderr_str()
            .contains("org.example.Copyd1.Error.InvalidArgument")
            || out.stderr_str().contains("already completed"),
        "{out}"
    );
}

/// A limit set on a running job holds for the run that carries it on after
/// copyd was killed: it is in the job's checkpoint.
#[test]
fn a_rate_limit_set_on_a_running_job_holds_after_a_crash() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("rate-restart");
    let mut daemon = Daemon::start_with_config(&bus, Some(&config(dir.path(), "")));
    let b = Busctl::new(bus.address());
    let (source, target) = (dir.path().join("src"), dir.path().join("copy"));
    make_big_file(&source, 6_000_000, 4);
    // 1.5 s at the job's own 4 MB/s.
    let job = b.copy(&[&source], &target, &["rate-limit", "t", "4000000"]);
    b.wait_job_state(&job, Duration::from_secs(30), |_| {
        b.job_u64(&job, "BytesDone") > 0
    });
    set_rate_limit(&b, &job, 1_000_000).assert_success();
    daemon.crash_and_restart(&bus);
    // auto_resume carries it on, at the limit set last.
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(60)), "completed");
    let seconds = run_seconds(&b, &job);
    eprintln!("the resumed run took {seconds:.2} s");
    assert!(
        seconds >= 3.0,
        "the resumed run took {seconds:.2} s: at its option's 4 MB/s, not the 1 MB/s set"
    );
    assert_files_equal(&source, &target);
}

/// A finished job and an interrupted one show their counts after copyd
/// restarts (SIGTERM, then SIGKILL), in properties and in `copyctl list`.
#[test]
fn counts_survive_restarts() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("counts");
    // Interrupted jobs stay so: their counts are the checkpoint's.
    let mut daemon =
        Daemon::start_with_config(&bus, Some(&config(dir.path(), "auto_resume = false\n")));
    let b = Busctl::new(bus.address());
    let tree = dir.path().join("tree");
    make_tree(&tree, 30, 5);
    let finished = b.copy(
        &[&tree],
        &dir.path().join("tree.copy"),
        &["recursive", "b", "true"],
    );
    assert_eq!(
        b.wait_job_end(&finished, Duration::from_secs(60)),
        "completed"
    );
    let finished_counts = counts(&b, &finished);
    let (bytes_done, bytes_total, files_done, files_total) = finished_counts;
    assert!(bytes_total > 0 && files_total > 30, "{finished_counts:?}");
    assert_eq!((bytes_done, files_done), (bytes_total, files_total));

    let big = dir.path().join("big");
    make_big_file(&big, 8_000_000, 6);
    // 4 s at 2 MB/s: stopped on the way.
    let slow = b.copy(
        &[&big],
        &dir.path().join("big.copy"),
        &["rate-limit", "t", "2000000"],
    );
    b.wait_job_state(&slow, Duration::from_secs(30), |_| {
        b.job_u64(&slow, "BytesDone") > 0
    });

    daemon.restart(&bus);
    assert_eq!(b.job_state(&slow), "interrupted");
    assert_eq!(counts(&b, &finished), finished_counts, "after SIGTERM");
    let slow_counts = counts(&b, &slow);
    let (done, total, files_done, files) = slow_counts;
    assert_eq!(
        (total, files, files_done),
        (8_000_000, 1, 0),
        "{slow_counts:?}"
    );
    // (The engine counts a piece's bytes once it is copied, before the
    // rate limit makes it wait: done may be all of the file, unfinished.)
    assert!(done > 0 && done <= total, "{slow_counts:?}");

    // copyctl shows the same.
    let list = cmd::copyctl(bus.address(), &["--json", "list"]);
    list.assert_success();
    let listed = list.json();
    let row = |path: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|job| job["path"] == path)
            .unwrap_or_else(|| panic!("{path} not listed:\n{list}"))
            .clone()
    };
    assert_eq!(row(&finished)["bytes_done"], bytes_done, "{list}");
    assert_eq!(row(&finished)["files_total"], files_total, "{list}");
    assert_eq!(row(&slow)["bytes_done"], done, "{list}");
    assert_eq!(row(&slow)["bytes_total"], total, "{list}");

    // Killed, copyd reads them back the same: the finished job's from its
    // end line, the interrupted one's from its checkpoint.
    daemon.crash_and_restart(&bus);
    assert_eq!(counts(&b, &finished), finished_counts, "after SIGKILL");
    assert_eq!(counts(&b, &slow), slow_counts, "after SIGKILL");
    // Resumed, it counts its own run and completes whole.
    b.resume(&slow).assert_success();
    assert_eq!(b.wait_job_end(&slow, Duration::from_secs(60)), "completed");
    assert_eq!(counts(&b, &slow), (total, total, 1, 1));
    assert_files_equal(&big, &dir.path().join("big.copy"));
}

/// A job killed (SIGKILL) while it runs, never paused, shows after the
/// restart how far it got, not 0/0: its counts are appended to its progress
/// log every 2 s as it runs.
#[test]
fn a_job_killed_while_running_shows_how_far_it_got() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("counts-killed");
    let mut daemon =
        Daemon::start_with_config(&bus, Some(&config(dir.path(), "auto_resume = false\n")));
    let b = Busctl::new(bus.address());
    let tree = dir.path().join("tree");
    let stats = make_tree(&tree, 200, 7);
    // About 8 s: killed after 3.
    let rate = (stats.bytes / 8).to_string();
    let job = b.copy(
        &[&tree],
        &dir.path().join("copy"),
        &["recursive", "b", "true", "rate-limit", "t", &rate],
    );
    b.wait_job_state(&job, Duration::from_secs(30), |state| state == "running");
    std::thread::sleep(Duration::from_secs(3));
    let before = counts(&b, &job);
    daemon.crash_and_restart(&bus);
    assert_eq!(b.job_state(&job), "interrupted");
    let (done, total, files_done, files) = counts(&b, &job);
    assert_eq!(total, stats.bytes, "{before:?}");
    assert!(files > 200, "files in all: {files}");
    assert!(done > 0 && files_done > 0, "{:?}", (done, files_done));
    // At most the 2 s between two log lines behind what it showed.
    assert!(done <= before.0 && files_done <= before.2);
}

/// The contract: ActiveJobs counts jobs running or paused, also one paused
/// before it ever ran (start-paused); QueuedJobs those waiting for a slot.
#[test]
fn a_job_paused_at_start_counts_as_active() {
    let env = TestEnv::start();
    let source = env.path("file");
    fs::write(&source, b"data").unwrap();
    let b = env.busctl();
    let job = b.copy(
        &[&source],
        &env.path("copy"),
        &["start-paused", "b", "true"],
    );
    assert_eq!(b.job_state(&job), "paused");
    assert_eq!(
        (manager_u64(&b, "ActiveJobs"), manager_u64(&b, "QueuedJobs")),
        (1, 0),
        "a paused job is active, and waits for no slot"
    );
    b.resume(&job).assert_success();
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(30)), "completed");
    assert_eq!(
        (manager_u64(&b, "ActiveJobs"), manager_u64(&b, "QueuedJobs")),
        (0, 0)
    );
}
