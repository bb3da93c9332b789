//! A GLib/Gio client (tests/clients/watch_job.py) watches a job's signals.

use std::fs;
use std::time::Duration;

use copyd_tests::gio::WatchJob;
use copyd_tests::tree::{assert_trees_equal, make_big_file, make_tree};
use copyd_tests::{osargs, TestEnv};

#[test]
fn gio_client_watches_progress_and_completed() {
    let env = TestEnv::start();
    let src = env.path("src");
    // ~300 MiB over a few big files, plus a tree of small ones, so the job
    // runs long enough to send Progress more than once.
    fs::create_dir(&src).unwrap();
    for i in 0..6u64 {
        make_big_file(&src.join(format!("big-{i}.bin")), 50 << 20, 100 + i);
    }
    make_tree(&src.join("small"), 100, 31);
    let dst = env.path("dst");

    let w = WatchJob::spawn(env.address(), &osargs!["--recursive", src, dst]);
    let r = w.wait(Duration::from_secs(300));
    let j = &r.json;
    let ctx = format!("watch_job.py said: {j:#}\nstderr:\n{}", r.stderr);
    assert_eq!(r.code, Some(0), "{ctx}");
    assert_eq!(j["violations"], serde_json::json!([]), "{ctx}");
    assert_eq!(j["completed"], true, "no Completed signal: {ctx}");
    assert_eq!(j["success"], true, "{ctx}");
    assert_eq!(j["error_name"], "", "{ctx}");
    assert_eq!(j["message"], "", "{ctx}");
    assert_eq!(j["state"], "completed", "{ctx}");
    assert!(
        j["progress_count"].as_u64().unwrap() >= 1,
        "no Progress signal: {ctx}"
    );
    let last = &j["last_progress"];
    assert_eq!(
        last["bytes_done"], last["bytes_total"],
        "last Progress is not complete: {ctx}"
    );
    assert_eq!(
        last["files_done"], last["files_total"],
        "last Progress is not complete: {ctx}"
    );
    assert!(last["bytes_total"].as_u64().unwrap() >= 300 << 20, "{ctx}");
    eprintln!("Progress signals: {}", j["progress_count"]);
    assert_trees_equal(&src, &dst);
}

/// Files and bytes rise together as a Gio client sees them: a tree of 300
/// directories of non-empty files, rate-limited, never shows files done
/// without bytes (issue 14.10: directories used to count as done when
/// made, so 596 "files" arrived before the first byte).
#[test]
fn gio_client_sees_files_and_bytes_rise_together() {
    let env = TestEnv::start();
    let src = env.path("src");
    for d in 0..300 {
        let dir = src.join(format!("d{d:03}/sub"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("f"), vec![d as u8; 2000]).unwrap();
    }
    let dst = env.path("dst");
    let w = WatchJob::spawn(
        env.address(),
        &osargs![
            "--recursive",
            "--files-carry-bytes",
            "--option",
            "rate-limit=uint64 300000",
            src,
            dst
        ],
    );
    let r = w.wait(Duration::from_secs(120));
    let j = &r.json;
    let ctx = format!("watch_job.py said: {j:#}\nstderr:\n{}", r.stderr);
    assert_eq!(r.code, Some(0), "{ctx}");
    assert_eq!(j["success"], true, "{ctx}");
    assert!(j["progress_count"].as_u64().unwrap() >= 2, "{ctx}");
    assert_eq!(j["violations"], serde_json::json!([]), "{ctx}");
    assert_trees_equal(&src, &dst);
}

/// The same client sees a failed request as a D-Bus error name.
#[test]
fn gio_client_gets_error_names() {
    let env = TestEnv::start();
    let w = WatchJob::spawn(
        env.address(),
        &osargs![env.path("missing"), env.path("dst")],
    );
    let r = w.wait(Duration::from_secs(60));
    assert_eq!(r.code, Some(3), "{:#}", r.json);
    assert_eq!(
        r.json["dbus_error"], "org.example.Copyd1.Error.NotFound",
        "{:#}",
        r.json
    );
    assert!(!env.path("dst").exists());
}
