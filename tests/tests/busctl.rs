//! copyd driven by busctl, as a shell script would: paths as byte arrays
//! (count, then every byte), options as a{sv}.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use copyd_tests::busctl::{aay_args, ay_args, path_bytes};
use copyd_tests::cases::{bad_cases, busctl_args};
use copyd_tests::tree::{self, assert_files_equal, assert_trees_equal, make_tree, snapshot};
use copyd_tests::{TestEnv, MANAGER_IFACE, MANAGER_PATH};

#[test]
fn busctl_copy_tree() {
    let env = TestEnv::start();
    let b = env.busctl();
    let src = env.path("src");
    let st = make_tree(&src, 250, 11);
    let dst = env.path("dst");
    let job = b.copy(&[&src], &dst, &["recursive", "b", "true"]);
    let state = b.wait_job_end(&job, Duration::from_secs(120));
    assert_eq!(
        state,
        "completed",
        "job {job}: ErrorName {:?} ErrorMessage {:?}",
        b.job_prop(&job, "ErrorName"),
        b.job_prop(&job, "ErrorMessage")
    );
    assert_trees_equal(&src, &dst);
    assert_eq!(b.job_u64(&job, "BytesDone"), b.job_u64(&job, "BytesTotal"));
    assert!(b.job_u64(&job, "BytesTotal") >= st.bytes);
    assert_eq!(b.job_u64(&job, "FilesDone"), b.job_u64(&job, "FilesTotal"));
    assert_eq!(b.job_prop(&job, "ErrorName").as_str(), Some(""));
    assert_eq!(
        b.job_prop(&job, "Cancelable").as_bool(),
        Some(false),
        "a completed job is not cancelable"
    );
    let (start, end) = (b.job_u64(&job, "StartTime"), b.job_u64(&job, "EndTime"));
    assert!(start > 0 && end >= start, "StartTime {start} EndTime {end}");
    assert_eq!(
        b.job_prop(&job, "Destination"),
        serde_json::json!(path_bytes(&dst))
    );
}

/// Non-UTF-8 bytes pass through, in both directions.
#[test]
fn busctl_non_utf8_paths() {
    let env = TestEnv::start();
    let b = env.busctl();
    let src = env.path(tree::non_utf8_name());
    fs::write(&src, b"bytes, not strings").unwrap();
    let dst = env.path(std::ffi::OsStr::from_bytes(b"d\xe9st-\xff.txt"));
    let out = b.start("Copy", &[path_bytes(&src)], path_bytes(&dst), &[]);
    out.assert_success();
    let job = copyd_tests::busctl::parse_busctl_object_path(&out.stdout_str());
    let state = b.wait_job_end(&job, Duration::from_secs(60));
    assert_eq!(state, "completed", "{:?}", b.job_prop(&job, "ErrorMessage"));
    assert_files_equal(&src, &dst);
    assert_eq!(
        b.job_prop(&job, "Destination"),
        serde_json::json!(path_bytes(&dst))
    );
    assert_eq!(
        b.job_prop(&job, "Sources"),
        serde_json::json!([path_bytes(&src)])
    );
}

/// A path with one trailing NUL (as g_variant_new_bytestring sends) is
/// accepted and the NUL dropped.
#[test]
fn busctl_trailing_nul() {
    let env = TestEnv::start();
    let b = env.busctl();
    let src = env.path("plain.txt");
    fs::write(&src, b"nul-terminated").unwrap();
    let dst = env.path("copy.txt");
    let s = [path_bytes(&src), b"\0"].concat();
    let d = [path_bytes(&dst), b"\0"].concat();
    let out = b.start("Copy", &[&s], &d, &[]);
    out.assert_success();
    let job = copyd_tests::busctl::parse_busctl_object_path(&out.stdout_str());
    let state = b.wait_job_end(&job, Duration::from_secs(60));
    assert_eq!(state, "completed", "{:?}", b.job_prop(&job, "ErrorMessage"));
    assert_files_equal(&src, &dst);
    // The job reports the paths without the NUL.
    assert_eq!(
        b.job_prop(&job, "Destination"),
        serde_json::json!(path_bytes(&dst))
    );
    assert_eq!(
        b.job_prop(&job, "Sources"),
        serde_json::json!([path_bytes(&src)])
    );
}

#[test]
fn busctl_move_file() {
    let env = TestEnv::start();
    let b = env.busctl();
    let src = env.path("m.bin");
    tree::write_random(&src, 70_000, &mut fastrand::Rng::with_seed(12));
    let saved = env.path("saved.bin");
    tree::reference_copy(&src, &saved);
    let dst = env.path("moved.bin");
    let out = b.start("Move", &[path_bytes(&src)], path_bytes(&dst), &[]);
    out.assert_success();
    let job = copyd_tests::busctl::parse_busctl_object_path(&out.stdout_str());
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(60)), "completed");
    assert_eq!(b.job_prop(&job, "Operation").as_str(), Some("move"));
    assert!(!src.exists(), "source still there after Move");
    assert_files_equal(&saved, &dst);
}

/// Plan reports the work and touches nothing.
#[test]
fn busctl_plan() {
    let env = TestEnv::start();
    let b = env.busctl();
    let src = env.path("src");
    let st = make_tree(&src, 60, 13);
    let dst = env.path("dst");
    let before = snapshot(env.work.path());
    let mut args = aay_args(&[path_bytes(&src)]);
    args.extend(ay_args(path_bytes(&dst)));
    args.extend(["1", "recursive", "b", "true"].map(String::from));
    let v = b.call_json(MANAGER_PATH, MANAGER_IFACE, "Plan", "aayaya{sv}", &args);
    let report = &v["data"][0];
    let get = |k: &str| {
        report
            .get(k)
            .map(|x| x["data"].clone())
            .unwrap_or_else(|| panic!("Plan report lacks {k}: {report}"))
    };
    assert_eq!(get("files").as_u64(), Some(st.files), "files in {report}");
    assert_eq!(get("bytes").as_u64(), Some(st.bytes), "bytes in {report}");
    assert_eq!(
        get("symlinks").as_u64(),
        Some(st.symlinks),
        "symlinks in {report}"
    );
    assert_eq!(
        get("conflicts").as_array().map(|a| a.len()),
        Some(0),
        "conflicts in {report}"
    );
    assert_eq!(get("fits").as_bool(), Some(true), "fits in {report}");
    assert_eq!(snapshot(env.work.path()), before, "Plan changed the disk");
    assert!(!dst.exists());
}

/// Every bad request fails, and changes nothing on disk. (busctl prints
/// only the error message, not its name; gdbus.rs checks the names.)
#[test]
fn busctl_bad_input() {
    let env = TestEnv::start();
    let b = env.busctl();
    make_tree(&env.path("src"), 20, 14);
    let before = snapshot(env.work.path());
    let mut problems = Vec::new();
    for case in bad_cases(env.work.path()) {
        let out = b.call(
            MANAGER_PATH,
            MANAGER_IFACE,
            "Copy",
            "aayaya{sv}",
            &busctl_args(&case),
        );
        if out.success() || out.code.is_none() {
            problems.push(format!("{}: Copy did not fail:\n{out}", case.what));
        } else if !out.stderr_str().contains("Call failed") {
            problems.push(format!("{}: unexpected busctl output:\n{out}", case.what));
        }
        std::thread::sleep(Duration::from_millis(100));
        let now = snapshot(env.work.path());
        if now != before {
            let new: Vec<_> = now.keys().filter(|k| !before.contains_key(*k)).collect();
            problems.push(format!(
                "{}: the disk changed; new entries: {new:?}",
                case.what
            ));
            // Start the next case from a clean slate.
            for k in new {
                let p = env.work.path().join(k);
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    // And no job was made for any of them.
    let list = b.call_json(MANAGER_PATH, MANAGER_IFACE, "ListJobs", "", &[]);
    assert_eq!(
        list["data"][0].as_array().map(|a| a.len()),
        Some(0),
        "jobs exist after bad requests: {list}"
    );
}
