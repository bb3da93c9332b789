//! Cancel: a cancelled job ends `cancelled`, says so in Completed, and
//! leaves nothing behind in the destination: no final file, no temporary.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use copyd_tests::gio::WatchJob;
use copyd_tests::tree::{copyd_temp_leftovers, dir_names, make_big_file};
use copyd_tests::{osargs, TestEnv};

const GIB: u64 = 1 << 30;

/// The destination directory holds nothing at all after the cancel.
#[track_caller]
fn assert_nothing_left(out: &Path) {
    let left = copyd_temp_leftovers(out);
    assert!(
        left.is_empty(),
        "temporary files left in {}: {left:?}",
        out.display()
    );
    assert_eq!(
        dir_names(out),
        Vec::<std::ffi::OsString>::new(),
        "{} is not empty after Cancel",
        out.display()
    );
}

#[track_caller]
fn assert_cancelled(r: &copyd_tests::gio::WatchResult) {
    let j = &r.json;
    let ctx = format!("watch_job.py said: {j:#}\nstderr:\n{}", r.stderr);
    assert_eq!(r.code, Some(0), "{ctx}");
    assert_eq!(j["completed"], true, "no Completed signal: {ctx}");
    assert_eq!(j["success"], false, "{ctx}");
    assert_eq!(
        j["error_name"], "org.example.Copyd1.Error.Cancelled",
        "{ctx}"
    );
    assert_eq!(j["state"], "cancelled", "{ctx}");
    assert_eq!(j["violations"], serde_json::json!([]), "{ctx}");
}

#[test]
fn cancel_paused_job() {
    let env = TestEnv::start();
    let b = env.busctl();
    let src = env.path("big.bin");
    make_big_file(&src, GIB, 41);
    let out = env.path("out");
    fs::create_dir(&out).unwrap();
    let dst = out.join("big.bin");

    let mut w = WatchJob::spawn(
        env.address(),
        &osargs!["--option", "start-paused=true", src, dst],
    );
    let job = w.job(Duration::from_secs(60));
    let state = b.job_state(&job);
    assert!(
        state == "paused" || state == "queued",
        "a start-paused job is {state:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.job_u64(&job, "BytesDone"), 0, "a paused job copied bytes");
    assert_eq!(
        b.job_prop(&job, "Cancelable").as_bool(),
        Some(true),
        "a paused job is cancelable"
    );

    b.cancel(&job).assert_success();
    let r = w.wait(Duration::from_secs(60));
    assert_cancelled(&r);
    assert_eq!(b.job_state(&job), "cancelled");
    assert_eq!(
        b.job_prop(&job, "ErrorName").as_str(),
        Some("org.example.Copyd1.Error.Cancelled")
    );
    assert_eq!(
        b.job_prop(&job, "Cancelable").as_bool(),
        Some(false),
        "a cancelled job is still cancelable"
    );
    assert_nothing_left(&out);
    assert_eq!(fs::metadata(&src).unwrap().len(), GIB, "the source changed");
    // Cancelling again changes nothing (and must not bring the job back).
    let _ = b.cancel(&job);
    assert_eq!(b.job_state(&job), "cancelled");
}

/// Starts copying `size` bytes, waits until BytesDone > 0, cancels.
/// Returns false if the job finished before the Cancel could land (the
/// machine copies too fast for this size), so the caller can retry bigger.
/// `as_tree`: copy a directory holding the big file (recursive) instead of
/// the file itself.
fn cancel_while_running(env: &TestEnv, size: u64, as_tree: bool, extra: &[&str]) -> bool {
    let b = env.busctl();
    let srcdir = env.path("srcdir");
    fs::create_dir_all(&srcdir).unwrap();
    let big = srcdir.join("big.bin");
    if fs::metadata(&big).ok().map(|m| m.len()) != Some(size) {
        make_big_file(&big, size, 42);
    }
    let out = env.path("out");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir(&out).unwrap();
    let (src, dst) = if as_tree {
        (srcdir.clone(), out.join("tree"))
    } else {
        (big.clone(), out.join("big.bin"))
    };

    let mut args = if as_tree {
        osargs!["--recursive"].to_vec()
    } else {
        Vec::new()
    };
    for o in extra {
        args.extend(osargs!["--option", o]);
    }
    args.extend(osargs![src, dst]);
    let mut w = WatchJob::spawn(env.address(), &args);
    let job = w.job(Duration::from_secs(60));
    let start = Instant::now();
    loop {
        let done = b.job_u64(&job, "BytesDone");
        if done > 0 {
            break;
        }
        let st = b.job_state(&job);
        assert!(
            matches!(st.as_str(), "queued" | "running"),
            "job is {st:?} before any byte was reported done ({:?})",
            b.job_prop(&job, "ErrorMessage")
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "BytesDone still 0 after 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let c = b.cancel(&job);
    let r = w.wait(Duration::from_secs(120));
    if r.json["success"] == true {
        eprintln!("job completed before Cancel landed ({size} bytes); Cancel said:\n{c}");
        assert!(dst.exists(), "a completed job has no destination");
        return false;
    }
    c.assert_success();
    assert_cancelled(&r);
    let done = b.job_u64(&job, "BytesDone");
    assert!(
        done < size,
        "cancelled job reports BytesDone {done} of {size}"
    );
    assert_nothing_left(&out);
    assert_eq!(
        fs::metadata(&big).unwrap().len(),
        size,
        "the source changed"
    );
    true
}

#[test]
fn cancel_running_job() {
    let env = TestEnv::start();
    // 2 GiB normally outlasts the time to see BytesDone > 0 and cancel;
    // on a very fast machine try once more with twice the size.
    if !cancel_while_running(&env, 2 * GIB, false, &[]) {
        fs::remove_file(env.path("srcdir/big.bin")).unwrap();
        assert!(
            cancel_while_running(&env, 4 * GIB, false, &[]),
            "even a 4 GiB copy finished before Cancel landed"
        );
    }
}

/// A tree (a directory holding a 2 GiB file) cancelled while running: no
/// final directory and no hidden temporary directory remains.
#[test]
fn cancel_running_tree() {
    let env = TestEnv::start();
    if !cancel_while_running(&env, 2 * GIB, true, &[]) {
        fs::remove_file(env.path("srcdir/big.bin")).unwrap();
        assert!(
            cancel_while_running(&env, 4 * GIB, true, &[]),
            "even a 4 GiB copy finished before Cancel landed"
        );
    }
}

/// With a rate limit (option rate-limit, t bytes/s) the job surely still
/// runs when Cancel arrives.
#[test]
fn cancel_rate_limited_job() {
    let env = TestEnv::start();
    assert!(
        cancel_while_running(&env, 256 << 20, true, &["rate-limit=uint64 20000000"]),
        "a copy limited to 20 MB/s of 256 MiB finished before Cancel"
    );
}

/// A start-paused job copies nothing; Resume lets it finish byte-identical.
#[test]
fn pause_and_resume() {
    let env = TestEnv::start();
    let b = env.busctl();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    make_big_file(&src.join("big.bin"), 512 << 20, 43);
    let out = env.path("out");
    fs::create_dir(&out).unwrap();
    let dst = out.join("tree");
    let mut w = WatchJob::spawn(
        env.address(),
        &osargs!["--recursive", "--option", "start-paused=true", src, dst],
    );
    let job = w.job(Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        b.job_u64(&job, "BytesDone"),
        0,
        "a start-paused job copied bytes"
    );
    assert!(!dst.exists(), "a paused job has its final file already");
    b.resume(&job).assert_success();
    let r = w.wait(Duration::from_secs(180));
    assert_eq!(r.json["success"], true, "{:#}", r.json);
    assert_eq!(r.json["state"], "completed", "{:#}", r.json);
    copyd_tests::tree::assert_trees_equal(&src, &dst);
    assert_eq!(
        dir_names(&out),
        vec![std::ffi::OsString::from("tree")],
        "leftovers next to the copy"
    );
}
