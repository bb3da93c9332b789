//! Verification, retries and on-error against faults a real disk makes,
//! through faultfs (src/bin/faultfs.rs): a FUSE file system of ours that
//! fails a read at an offset, interrupts calls, flips a byte of what a
//! read-back returns. copyd runs on a private bus; copyctl drives it.

use std::fs;
use std::path::{Path, PathBuf};

use copyd_tests::faultfs::{FaultFs, Op, Rule, Times};
use copyd_tests::TestEnv;
use rustix::io::Errno;

/// A faultfs mount over its own backing directory (the mount is dropped,
/// and unmounted, before the directory).
struct Faulty {
    fs: FaultFs,
    _backing: tempfile::TempDir,
}

impl Faulty {
    fn mount() -> Option<Faulty> {
        let backing = tempfile::tempdir_in("/tmp").unwrap();
        let fs = FaultFs::mount_or_skip(backing.path())?;
        Some(Faulty {
            fs,
            _backing: backing,
        })
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.fs.path().join(relative)
    }
}

/// Bytes that differ from one offset to the next.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2654435761)
                .wrapping_add(seed as u64) as u8
                ^ (i >> 12) as u8
        })
        .collect()
}

/// A tree of five files under `root/tree`, `bad.bin` among them (3 MiB,
/// so a fault at 2 MiB is well inside it).
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = root.join("tree");
    fs::create_dir_all(dir.join("sub")).unwrap();
    let files = vec![
        ("a.txt".to_owned(), pattern(10_000, 1)),
        ("bad.bin".to_owned(), pattern(3 << 20, 2)),
        ("sub/b.bin".to_owned(), pattern(1 << 20, 3)),
        ("sub/c".to_owned(), pattern(1, 4)),
        ("sub/empty".to_owned(), Vec::new()),
    ];
    for (name, bytes) in &files {
        fs::write(dir.join(name), bytes).unwrap();
    }
    files
}

fn json_of(out: &copyd_tests::cmd::CmdOutput) -> serde_json::Value {
    // --json prints the job's summary as one line on stdout (the last one;
    // a digest line may not follow with --json).
    let stdout = out.stdout_str();
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {stdout}"))
}

fn failed_sources(summary: &serde_json::Value) -> Vec<String> {
    summary["failed_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn interrupted_reads_are_retried_and_the_copy_succeeds() {
    let Some(faulty) = Faulty::mount() else {
        return;
    };
    let env = TestEnv::start();
    let files = tree(faulty.fs.path());
    // EINTR, then EAGAIN, the first three reads of two files (the kernel
    // may split one read call into several FUSE reads, so one call of
    // copyd can meet more than one of them): each call is retried, at most
    // three times, until it gets data.
    faulty.fs.set_rules(&[
        Rule::transient("tree/bad.bin", Op::Read, Errno::INTR, 3),
        Rule::transient("tree/sub/b.bin", Op::Read, Errno::AGAIN, 3),
    ]);
    let copy = env.path("copy");
    let out = env.copyctl(&[
        "--json".as_ref(),
        "copy".as_ref(),
        "-r".as_ref(),
        faulty.path("tree").as_os_str(),
        copy.as_os_str(),
    ]);
    out.assert_success();
    let summary = json_of(&out);
    assert_eq!(faulty.fs.log().len(), 6, "{:?}", faulty.fs.log());
    for (name, bytes) in &files {
        assert_eq!(&fs::read(copy.join(name)).unwrap(), bytes, "{name}");
    }
    // Each retry counted on the job and logged, with the file it was of.
    let log = env.daemon.log_text();
    let logged = |file: &str| {
        log.lines()
            .filter(|l| l.contains("transient error: trying to") && l.contains(file))
            .count() as u64
    };
    let (bad, b) = (logged("tree/bad.bin"), logged("tree/sub/b.bin"));
    assert!((1..=3).contains(&bad) && (1..=3).contains(&b), "{log}");
    assert_eq!(summary["retries"], bad + b, "{summary}\n{log}");
}

#[test]
fn a_permanent_read_error_fails_that_file_alone_and_the_rest_is_copied() {
    let Some(faulty) = Faulty::mount() else {
        return;
    };
    let env = TestEnv::start();
    let files = tree(faulty.fs.path());
    faulty.fs.set_rules(&[Rule::read_error(
        "tree/bad.bin",
        2 << 20,
        Errno::IO,
        Times::Always,
    )]);
    let copy = env.path("copy");
    let out = env.copyctl(&[
        "--json".as_ref(),
        "copy".as_ref(),
        "-r".as_ref(),
        faulty.path("tree").as_os_str(),
        copy.as_os_str(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr_str());
    let summary = json_of(&out);
    let bad = faulty.path("tree/bad.bin");
    assert_eq!(failed_sources(&summary), [bad.to_str().unwrap()]);
    assert!(
        summary["failed_files"][0][1]
            .as_str()
            .unwrap()
            .contains("Input/output error"),
        "{summary}"
    );
    // EIO of a local (non-network) file system is not retried.
    assert_eq!(summary["retries"], 0);
    for (name, bytes) in &files {
        match name.as_str() {
            "bad.bin" => assert!(!copy.join(name).exists(), "a partial copy stands"),
            _ => assert_eq!(&fs::read(copy.join(name)).unwrap(), bytes, "{name}"),
        }
    }
    let stderr = out.stderr_str();
    assert!(stderr.contains("cannot copy '"), "{stderr}");
    assert!(
        stderr.contains("4 of 5 files copied; 1 failed")
            || stderr.contains("files copied; 1 failed"),
        "{stderr}"
    );
}

#[test]
fn on_error_stop_ends_the_job_at_the_first_failed_file() {
    let Some(faulty) = Faulty::mount() else {
        return;
    };
    let env = TestEnv::start();
    tree(faulty.fs.path());
    faulty.fs.set_rules(&[Rule::read_error(
        "tree/bad.bin",
        0,
        Errno::IO,
        Times::Always,
    )]);
    let copy = env.path("copy");
    let out = env.copyctl(&[
        "--json".as_ref(),
        "copy".as_ref(),
        "-r".as_ref(),
        "--on-error".as_ref(),
        "stop".as_ref(),
        faulty.path("tree").as_os_str(),
        copy.as_os_str(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr_str());
    let summary = json_of(&out);
    assert_eq!(summary["state"], "failed");
    assert_eq!(summary["error_name"], "org.example.Copyd1.Error.Failed");
    assert!(
        summary["error_message"]
            .as_str()
            .unwrap()
            .contains("Input/output error"),
        "{summary}"
    );
    // The job is one tree: it stopped, so none of it stands.
    assert!(!copy.exists(), "a stopped job left its tree");
    let leftovers: Vec<_> = fs::read_dir(env.work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".copyd-"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
}

#[test]
fn a_copy_read_back_corrupted_fails_with_checksum_mismatch_and_is_never_placed() {
    let Some(faulty) = Faulty::mount() else {
        return;
    };
    let env = TestEnv::start();
    let source = env.path("source.bin");
    let bytes = pattern((1 << 20) + 1, 9);
    fs::write(&source, &bytes).unwrap();
    fs::create_dir(faulty.path("dst")).unwrap();
    // The read-back reads the copy under its temporary name, before the
    // rename: a byte of what it returns comes back flipped.
    faulty
        .fs
        .set_rules(&[Rule::flip_byte("dst/.copyd-*.tmp", 12345)]);
    let target = faulty.path("dst/copy.bin");
    for method in ["crc32", "md5", "sha256"] {
        let out = env.copyctl(&[
            "copy".as_ref(),
            "--verify".as_ref(),
            method.as_ref(),
            source.as_os_str(),
            target.as_os_str(),
        ]);
        assert_eq!(out.code, Some(1), "{method}: {}", out.stderr_str());
        let stderr = out.stderr_str();
        assert!(
            stderr.contains("org.example.Copyd1.Error.ChecksumMismatch"),
            "{method}: {stderr}"
        );
        // Both digests named.
        assert!(
            stderr.contains(&format!("source {method} "))
                && stderr.contains(&format!("copy {method} ")),
            "{method}: {stderr}"
        );
        assert!(
            !target.exists(),
            "{method}: the bad copy stands under its name"
        );
        let names: Vec<_> = fs::read_dir(faulty.path("dst"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.is_empty(), "{method}: left in dst: {names:?}");
    }
    assert!(
        faulty
            .fs
            .log()
            .iter()
            .any(|fault| fault.fault == "flip_byte"),
        "the flip never fired: the read-back did not reach the file system"
    );
    // Without the fault the same copy verifies and stands.
    faulty.fs.clear_rules();
    env.copyctl(&[
        "copy".as_ref(),
        "--verify".as_ref(),
        "sha256".as_ref(),
        source.as_os_str(),
        target.as_os_str(),
    ])
    .assert_success();
    assert_eq!(fs::read(&target).unwrap(), bytes);
}

#[test]
fn a_move_keeps_the_source_of_the_file_that_failed() {
    let Some(faulty) = Faulty::mount() else {
        return;
    };
    let env = TestEnv::start();
    let good = faulty.path("good.bin");
    let bad = faulty.path("bad.bin");
    let (good_bytes, bad_bytes) = (pattern(200_000, 5), pattern(300_000, 6));
    fs::write(&good, &good_bytes).unwrap();
    fs::write(&bad, &bad_bytes).unwrap();
    faulty.fs.set_rules(&[Rule::read_error(
        "bad.bin",
        100_000,
        Errno::IO,
        Times::Always,
    )]);
    let dest = env.path("dest");
    fs::create_dir(&dest).unwrap();
    let out = env.copyctl(&[
        "--json".as_ref(),
        "move".as_ref(),
        good.as_os_str(),
        bad.as_os_str(),
        dest.as_os_str(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr_str());
    assert_eq!(failed_sources(&json_of(&out)), [bad.to_str().unwrap()]);
    assert!(!good.exists(), "the good file's source was not removed");
    assert_eq!(fs::read(dest.join("good.bin")).unwrap(), good_bytes);
    faulty.fs.clear_rules();
    assert_eq!(
        fs::read(&bad).unwrap(),
        bad_bytes,
        "the failed file's source is gone"
    );
    assert!(!dest.join("bad.bin").exists());
}

#[test]
fn a_moved_file_that_fails_verification_keeps_its_source() {
    let Some(faulty) = Faulty::mount() else {
        return;
    };
    let env = TestEnv::start();
    let source = env.path("moved.bin");
    let bytes = pattern(500_000, 7);
    fs::write(&source, &bytes).unwrap();
    fs::create_dir(faulty.path("dst")).unwrap();
    faulty
        .fs
        .set_rules(&[Rule::flip_byte("dst/.copyd-*.tmp", 0)]);
    let target = faulty.path("dst/moved.bin");
    let out = env.copyctl(&[
        "move".as_ref(),
        "--verify".as_ref(),
        "sha256".as_ref(),
        source.as_os_str(),
        target.as_os_str(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr_str());
    assert!(
        out.stderr_str().contains("ChecksumMismatch"),
        "{}",
        out.stderr_str()
    );
    assert_eq!(
        fs::read(&source).unwrap(),
        bytes,
        "the source of a bad copy was deleted"
    );
    assert!(!target.exists());
}

#[test]
fn a_transient_error_that_does_not_go_away_fails_the_file_after_the_retries() {
    let Some(faulty) = Faulty::mount() else {
        return;
    };
    let env = TestEnv::start();
    let files = tree(faulty.fs.path());
    faulty.fs.set_rules(&[Rule::transient(
        "tree/bad.bin",
        Op::Read,
        Errno::AGAIN,
        1000,
    )]);
    let copy = env.path("copy");
    let out = env.copyctl(&[
        "--json".as_ref(),
        "copy".as_ref(),
        "-r".as_ref(),
        faulty.path("tree").as_os_str(),
        copy.as_os_str(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr_str());
    let summary = json_of(&out);
    assert_eq!(
        failed_sources(&summary),
        [faulty.path("tree/bad.bin").to_str().unwrap()]
    );
    // The default policy: three retries (200, 400, 800 ms), then the error.
    assert_eq!(summary["retries"], 3, "{summary}");
    for (name, bytes) in files.iter().filter(|(name, _)| name != "bad.bin") {
        assert_eq!(&fs::read(copy.join(name)).unwrap(), bytes, "{name}");
    }
}

#[test]
fn copyctl_retry_copies_exactly_the_failed_files_with_the_same_options() {
    let Some(faulty) = Faulty::mount() else {
        return;
    };
    let env = TestEnv::start();
    let files = tree(faulty.fs.path());
    faulty.fs.set_rules(&[
        Rule::read_error("tree/bad.bin", 1 << 20, Errno::IO, Times::Always),
        Rule::read_error("tree/sub/c", 0, Errno::IO, Times::Always),
    ]);
    let copy = env.path("copy");
    let out = env.copyctl(&[
        "--json".as_ref(),
        "copy".as_ref(),
        "-r".as_ref(),
        "--verify".as_ref(),
        "md5".as_ref(),
        faulty.path("tree").as_os_str(),
        copy.as_os_str(),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.stderr_str());
    let first = json_of(&out);
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(failed_sources(&first).len(), 2, "{first}");

    // Still failing: the retry fails the same two, and says so.
    let again = env.copyctl(&["--json", "retry", &id]);
    assert_eq!(again.code, Some(1), "{}", again.stderr_str());
    let second = json_of(&again);
    assert_ne!(second["id"], first["id"]);
    let mut retried: Vec<String> = second["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    retried.sort();
    let mut failed = failed_sources(&first);
    failed.sort();
    assert_eq!(retried, failed, "the retry is not exactly the failed files");

    // The fault gone, a retry of the second job places both, verified by
    // the first job's method (the same options).
    faulty.fs.clear_rules();
    let fixed = env.copyctl(&["--json", "retry", second["id"].as_str().unwrap()]);
    fixed.assert_success();
    let third = json_of(&fixed);
    assert_eq!(third["verify"], "md5");
    assert_eq!(third["checksums"].as_array().unwrap().len(), 2, "{third}");
    for (name, bytes) in &files {
        assert_eq!(&fs::read(copy.join(name)).unwrap(), bytes, "{name}");
    }

    // Nothing to retry, and no such job: typed errors.
    let nothing = env.copyctl(&["retry", third["id"].as_str().unwrap()]);
    assert!(
        nothing.stderr_str().contains("Error.InvalidArgument"),
        "{}",
        nothing.stderr_str()
    );
    let missing = env.copyctl(&["retry", "999"]);
    assert!(
        missing.stderr_str().contains("Error.NotFound"),
        "{}",
        missing.stderr_str()
    );
}

#[test]
fn a_read_that_stalls_raises_the_stall_alert_which_clears_when_it_goes_on() {
    use copyd_tests::busctl::Busctl;
    use copyd_tests::{Daemon, Policy, TestBus};
    use std::time::{Duration, Instant};

    let Some(faulty) = Faulty::mount() else {
        return;
    };
    let bus = TestBus::start(Policy::Permissive);
    let state = tempfile::tempdir_in("/tmp").unwrap();
    let config = format!(
        "state_dir = \"{}\"\njob_retention_seconds = 600\n[monitoring]\nstall_seconds = 2\n",
        state.path().display()
    );
    let _daemon = Daemon::start_with_config(&bus, Some(&config));
    let b = Busctl::new(bus.address());
    let alerts = || -> Vec<String> {
        let out = copyd_tests::cmd::copyctl(bus.address(), &["--json", "alerts"]);
        out.assert_success();
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| alert["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let wait_until = |limit: Duration, what: &str, done: &dyn Fn() -> bool| {
        let began = Instant::now();
        while !done() {
            assert!(began.elapsed() < limit, "no {what} within {limit:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let source = faulty.path("slow.bin");
    fs::write(&source, pattern(1 << 20, 8)).unwrap();
    // Every read of the file waits 6 s: the job makes no progress for
    // longer than stall_seconds, then goes on.
    faulty
        .fs
        .set_rules(&[Rule::stall("slow.bin", 6.0).times(Times::Once)]);
    let copy = tempfile::tempdir_in("/tmp").unwrap();
    let job = b.copy(&[&source], &copy.path().join("slow.bin"), &[]);
    let id = b.job_prop(&job, "Id").as_str().unwrap().to_owned();
    let stalled = format!("job-stalled:{id}");
    wait_until(Duration::from_secs(6), "stall alert", &|| {
        alerts().contains(&stalled)
    });
    assert_eq!(b.job_state(&job), "running");
    assert!(faulty.fs.log().iter().any(|fault| fault.fault == "stall"));
    wait_until(Duration::from_secs(20), "cleared alert", &|| {
        !alerts().contains(&stalled)
    });
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(30)), "completed");
    assert_eq!(
        fs::read(copy.path().join("slow.bin")).unwrap(),
        pattern(1 << 20, 8)
    );
}
