//! copyctl against copyd on a private bus: the command-line user's view.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;

use copyd_tests::tree::{self, assert_files_equal, assert_trees_equal, make_tree, reference_copy};
use copyd_tests::{osargs, CmdOutput, TestEnv, MANAGER_IFACE, MANAGER_PATH};

/// copyctl failed with one line on stderr naming `error` (e.g. "NotFound").
#[track_caller]
fn assert_one_line_error(out: &CmdOutput, error: &str) {
    out.assert_failure();
    let err = out.stderr_str();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "stderr should be one line:\n{out}");
    assert!(
        lines[0].contains(&format!("org.example.Copyd1.Error.{error}")),
        "stderr should name org.example.Copyd1.Error.{error}:\n{out}"
    );
    assert!(
        lines[0].starts_with("copyctl: "),
        "stderr should start with 'copyctl: ':\n{out}"
    );
}

#[test]
fn copy_tree() {
    let env = TestEnv::start();
    let src = env.path("src");
    make_tree(&src, 300, 1);
    let dst = env.path("dst");
    env.copyctl(&osargs!["copy", "-r", src, dst])
        .assert_success();
    assert_trees_equal(&src, &dst);
    assert!(
        tree::copyd_temp_leftovers(&dst).is_empty(),
        "temporary files left: {:?}",
        tree::copyd_temp_leftovers(&dst)
    );
}

#[test]
fn copy_tree_json() {
    let env = TestEnv::start();
    let src = env.path("src");
    let st = make_tree(&src, 200, 2);
    let dst = env.path("dst");
    let out = env.copyctl(&osargs!["--json", "copy", "-r", src, dst]);
    out.assert_success();
    let j = out.json();
    assert_eq!(j["state"], "completed", "{out}");
    assert_eq!(j["operation"], "copy", "{out}");
    for k in [
        "id",
        "state",
        "operation",
        "bytes_done",
        "bytes_total",
        "files_done",
        "files_total",
        "engine",
        "error_name",
        "error_message",
    ] {
        assert!(j.get(k).is_some(), "--json output lacks {k:?}:\n{out}");
    }
    let n = |k: &str| {
        j[k].as_u64()
            .unwrap_or_else(|| panic!("{k} is not a number:\n{out}"))
    };
    assert_eq!(n("bytes_done"), n("bytes_total"), "{out}");
    assert!(
        n("bytes_total") >= st.bytes,
        "bytes_total {} < {} bytes in the tree:\n{out}",
        n("bytes_total"),
        st.bytes
    );
    assert_eq!(n("files_done"), n("files_total"), "{out}");
    assert!(
        n("files_total") >= st.files,
        "files_total {} < {} files in the tree:\n{out}",
        n("files_total"),
        st.files
    );
    assert!(
        j["error_name"].as_str().is_none_or(str::is_empty),
        "error_name set on success:\n{out}"
    );
    assert!(
        !j["id"].as_str().unwrap_or("").is_empty(),
        "empty id:\n{out}"
    );
    assert_trees_equal(&src, &dst);

    // The job ran in the copyd on the test bus (not in a private copyd
    // that copyctl could start when it finds no service), and is still
    // there (job_retention_seconds = 600).
    let id = j["id"].as_str().unwrap().to_string();
    let b = env.busctl();
    let got = b.call_json(
        MANAGER_PATH,
        MANAGER_IFACE,
        "GetJob",
        "s",
        std::slice::from_ref(&id),
    );
    let path = got["data"][0].as_str().unwrap().to_string();
    assert_eq!(b.job_state(&path), "completed");
    assert_eq!(b.job_u64(&path, "BytesDone"), n("bytes_done"));
    let list = env.copyctl(&osargs!["list"]);
    list.assert_success();
    assert!(
        list.stdout_str().contains(&id),
        "copyctl list does not show job {id}:\n{list}"
    );
    let status = env.copyctl(&osargs!["--json", "status", &id]);
    status.assert_success();
    assert_eq!(status.json()["state"], "completed", "{status}");
}

#[test]
fn copy_single_file() {
    let env = TestEnv::start();
    let src = env.path("one.bin");
    tree::write_random(&src, 300_000, &mut fastrand::Rng::with_seed(3));
    // To a new name.
    let dst = env.path("copy.bin");
    env.copyctl(&osargs![&src, &dst]).assert_failure(); // no subcommand: a usage error
    env.copyctl(&osargs!["copy", src, dst]).assert_success();
    assert_files_equal(&src, &dst);
    // Into an existing directory: the file keeps its name.
    let dir = env.path("into");
    fs::create_dir(&dir).unwrap();
    env.copyctl(&osargs!["copy", src, dir]).assert_success();
    assert_files_equal(&src, &dir.join("one.bin"));
    assert_eq!(
        tree::dir_names(&dir),
        vec![OsString::from("one.bin")],
        "only the copy in {}",
        dir.display()
    );
}

#[test]
fn copy_several_sources_into_directory() {
    let env = TestEnv::start();
    let a = env.path("a.txt");
    let b = env.path("b.txt");
    fs::write(&a, b"aaa").unwrap();
    fs::write(&b, b"bbbb").unwrap();
    let dir = env.path("into");
    fs::create_dir(&dir).unwrap();
    env.copyctl(&osargs!["copy", a, b, dir]).assert_success();
    assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"aaa");
    assert_eq!(fs::read(dir.join("b.txt")).unwrap(), b"bbbb");
}

#[test]
fn move_file() {
    let env = TestEnv::start();
    let src = env.path("one.bin");
    tree::write_random(&src, 123_456, &mut fastrand::Rng::with_seed(4));
    let saved = env.path("saved.bin");
    reference_copy(&src, &saved);
    let dst = env.path("moved.bin");
    env.copyctl(&osargs!["move", src, dst]).assert_success();
    assert!(!src.exists(), "source still exists after move");
    assert_files_equal(&saved, &dst);
}

#[test]
fn move_tree() {
    let env = TestEnv::start();
    let src = env.path("src");
    make_tree(&src, 150, 5);
    let saved = env.path("saved");
    reference_copy(&src, &saved);
    let dst = env.path("dst");
    env.copyctl(&osargs!["move", "-r", src, dst])
        .assert_success();
    assert!(
        fs::symlink_metadata(&src).is_err(),
        "source tree still exists after move"
    );
    assert_trees_equal(&saved, &dst);
}

#[test]
fn error_nonexistent_source() {
    let env = TestEnv::start();
    let src = env.path("no-such-file");
    let dst = env.path("dst");
    let out = env.copyctl(&osargs!["copy", src, dst]);
    assert_one_line_error(&out, "NotFound");
    assert!(fs::symlink_metadata(&dst).is_err(), "destination created");
    assert_eq!(
        tree::dir_names(env.work.path()),
        Vec::<OsString>::new(),
        "something was created"
    );
}

#[test]
fn error_existing_target() {
    let env = TestEnv::start();
    let src = env.path("src.txt");
    let dst = env.path("dst.txt");
    fs::write(&src, b"new contents").unwrap();
    fs::write(&dst, b"old contents").unwrap();
    let out = env.copyctl(&osargs!["copy", src, dst]);
    assert_one_line_error(&out, "AlreadyExists");
    assert_eq!(
        fs::read(&dst).unwrap(),
        b"old contents",
        "existing target was changed"
    );
    assert_eq!(
        tree::dir_names(env.work.path()),
        vec![OsString::from("dst.txt"), OsString::from("src.txt")]
    );

    // Tree into a directory that already holds an entry of that name.
    let tsrc = env.path("tree");
    make_tree(&tsrc, 10, 6);
    let into = env.path("into");
    fs::create_dir_all(into.join("tree")).unwrap();
    let out = env.copyctl(&osargs!["copy", "-r", tsrc, into]);
    assert_one_line_error(&out, "AlreadyExists");
    assert!(
        tree::snapshot(&into.join("tree")).is_empty(),
        "existing directory was filled"
    );

    // --on-conflict overwrite replaces it.
    let out = env.copyctl(&osargs!["copy", "--on-conflict", "overwrite", src, dst]);
    out.assert_success();
    assert_eq!(
        fs::read(&dst).unwrap(),
        b"new contents",
        "overwrite did not replace the target"
    );
    // --on-conflict skip leaves it.
    fs::write(&dst, b"old again").unwrap();
    let out = env.copyctl(&osargs!["copy", "--on-conflict", "skip", src, dst]);
    out.assert_success();
    assert_eq!(
        fs::read(&dst).unwrap(),
        b"old again",
        "skip replaced the target"
    );
}

#[test]
fn error_directory_without_recursive() {
    let env = TestEnv::start();
    let src = env.path("src");
    make_tree(&src, 5, 7);
    let dst = env.path("dst");
    let out = env.copyctl(&osargs!["copy", src, dst]);
    assert_one_line_error(&out, "InvalidArgument");
    assert!(fs::symlink_metadata(&dst).is_err(), "destination created");
}

#[test]
fn non_utf8_file_name() {
    let env = TestEnv::start();
    let name = tree::non_utf8_name();
    let src = env.path(name);
    fs::write(&src, b"latin-1 name").unwrap();
    let into = env.path("into");
    fs::create_dir(&into).unwrap();
    // Into a directory: the name survives byte for byte.
    env.copyctl(&osargs!["copy", src, into]).assert_success();
    assert_eq!(tree::dir_names(&into), vec![name.to_os_string()]);
    assert_files_equal(&src, &into.join(name));
    // To an explicit non-UTF-8 destination name.
    let dst = env.path(OsString::from_vec(b"d\xe9st\xff.txt".to_vec()));
    env.copyctl(&osargs!["copy", src, dst]).assert_success();
    assert_files_equal(&src, &dst);
    // A tree holding it (every make_tree has one at its top).
    let tsrc = env.path("tree");
    make_tree(&tsrc, 20, 8);
    let tdst = env.path("tree-copy");
    env.copyctl(&osargs!["copy", "-r", tsrc, tdst])
        .assert_success();
    assert_files_equal(&tsrc.join(name), &tdst.join(name));
    assert_trees_equal(&tsrc, &tdst);
}

/// By default a copy keeps mode and timestamps (preserve: mode, timestamps).
#[test]
fn copy_preserves_mode_and_mtime() {
    use std::os::unix::fs::MetadataExt;
    let env = TestEnv::start();
    let src = env.path("src");
    make_tree(&src, 30, 9);
    // Old, distinctive times.
    let out = copyd_tests::cmd::run(std::process::Command::new("find").arg(&src).args([
        "-not",
        "-type",
        "l",
        "-exec",
        "touch",
        "-h",
        "-d",
        "2001-02-03 04:05:06.789",
        "{}",
        "+",
    ]));
    out.assert_success();
    let dst = env.path("dst");
    env.copyctl(&osargs!["copy", "-r", src, dst])
        .assert_success();
    assert_trees_equal(&src, &dst);
    let mut bad = Vec::new();
    for (rel, e) in tree::snapshot(&src) {
        if let tree::Entry::File { .. } = e {
            let a = fs::metadata(src.join(&rel)).unwrap();
            let b = fs::metadata(dst.join(&rel)).unwrap();
            if (a.mtime(), a.mtime_nsec()) != (b.mtime(), b.mtime_nsec()) {
                bad.push(format!(
                    "{}: {}.{:09} != {}.{:09}",
                    rel.display(),
                    a.mtime(),
                    a.mtime_nsec(),
                    b.mtime(),
                    b.mtime_nsec()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "mtimes not preserved:\n  {}",
        bad.join("\n  ")
    );
}

/// `--no-sync` (option sync = false): the copy is still complete, identical
/// and placed whole, with no temporary left behind.
#[test]
fn copy_tree_without_sync() {
    let env = TestEnv::start();
    let src = env.path("src");
    make_tree(&src, 300, 21);
    let dst = env.path("dst");
    env.copyctl(&osargs!["copy", "-r", "--no-sync", src, dst])
        .assert_success();
    assert_trees_equal(&src, &dst);
    assert!(
        tree::copyd_temp_leftovers(&dst).is_empty(),
        "temporary files left: {:?}",
        tree::copyd_temp_leftovers(&dst)
    );
    // A lone file too.
    let one = env.path("one.bin");
    tree::write_random(&one, 3 << 20, &mut fastrand::Rng::with_seed(22));
    let copy = env.path("one-copy.bin");
    env.copyctl(&osargs!["copy", "--no-sync", one, copy])
        .assert_success();
    assert_files_equal(&one, &copy);
}

/// A move never goes without sync: Move with sync = false is
/// InvalidArgument, makes no job, and leaves the disk as it was. (copyctl
/// does not offer --no-sync for move at all.) Copy and Plan take it.
#[test]
fn move_without_sync_is_refused() {
    use copyd_tests::busctl::{gdbus_call, gdbus_error_name, gvariant_bytestring};
    let env = TestEnv::start();
    let src = env.path("src");
    make_tree(&src, 20, 23);
    let saved = env.path("saved");
    reference_copy(&src, &saved);
    let dst = env.path("dst");
    let call = |method: &str, sync: bool| {
        gdbus_call(
            env.address(),
            MANAGER_PATH,
            &format!("{MANAGER_IFACE}.{method}"),
            &[
                format!("[{}]", gvariant_bytestring(&src)),
                gvariant_bytestring(&dst),
                format!("{{'recursive': <true>, 'sync': <{sync}>}}"),
            ],
        )
    };
    let out = call("Move", false);
    out.assert_failure();
    assert_eq!(
        gdbus_error_name(&out).as_deref(),
        Some("org.example.Copyd1.Error.InvalidArgument"),
        "{out}"
    );
    assert!(
        out.stderr_str()
            .contains("durable before deleting its source"),
        "{out}"
    );
    assert!(fs::symlink_metadata(&dst).is_err(), "destination created");
    assert_trees_equal(&saved, &src);
    let mut names = tree::dir_names(env.work.path());
    names.sort();
    assert_eq!(names, vec![OsString::from("saved"), OsString::from("src")]);
    let list = env
        .busctl()
        .call_json(MANAGER_PATH, MANAGER_IFACE, "ListJobs", "", &[]);
    assert_eq!(
        list["data"][0].as_array().map(|a| a.len()),
        Some(0),
        "a job exists after the refused move: {list}"
    );
    let out = env.copyctl(&osargs!["move", "-r", "--no-sync", src, dst]);
    out.assert_failure();
    assert!(fs::symlink_metadata(&dst).is_err(), "destination created");

    call("Plan", false).assert_success();
    let out = call("Copy", false);
    out.assert_success();
    let job = copyd_tests::busctl::parse_gdbus_object_path(&out.stdout_str());
    assert_eq!(
        env.busctl()
            .wait_job_end(&job, std::time::Duration::from_secs(60)),
        "completed"
    );
    assert_trees_equal(&src, &dst);
}

/// Runs copyctl with its stdout a pipe whose reader is already gone, as
/// `copyctl ... | head` leaves it once head has read enough.
fn copyctl_into_a_closed_pipe(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    std::process::Command::new(copyd_tests::bins::copyctl())
        .env("COPYD_ADDRESS", env.address())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

/// A reader that goes away ends copyctl quietly, as it does ls: no panic,
/// no message, the status of a program killed by SIGPIPE.
#[test]
fn a_closed_pipe_ends_copyctl_quietly() {
    let env = TestEnv::start();
    let b = env.busctl();
    for i in 0..10 {
        let source = env.path(format!("f{i}"));
        fs::write(&source, format!("file {i}")).unwrap();
        let job = b.copy(&[&source], &env.path(format!("f{i}.copy")), &[]);
        b.wait_job_end(&job, std::time::Duration::from_secs(30));
    }
    for args in [
        &["--json", "list"][..],
        &["list"],
        &["status", "1"],
        &["completions", "bash"],
        &["man"],
    ] {
        let out = copyctl_into_a_closed_pipe(&env, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "copyctl {args:?} said: {stderr}");
        assert_eq!(out.status.code(), Some(141), "copyctl {args:?}: {out:?}");
    }
    // As the issue had it: the pipe closes after the reader took its part.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --json list | head -c 1500 >/dev/null",
            copyd_tests::bins::copyctl().display()
        ))
        .env("COPYD_ADDRESS", env.address())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The progress bar on a terminal (script(1) gives copyctl one): the
/// percentage, bytes, rate, ETA, files and the file being copied; the last
/// phase named for what the job does (never "syncing" without sync).
#[test]
fn the_progress_bar_shows_percent_the_current_file_and_syncing() {
    let env = TestEnv::start();
    let source = env.path("progress-source.bin");
    fs::write(&source, vec![7u8; 6_000_000]).unwrap();
    let copy = env.path("progress-copy.bin");
    let typescript = env.path("typescript");
    let command = format!(
        "COPYD_ADDRESS='{}' NO_COLOR=1 {} copy --progress --rate-limit 3MB/s {} {}",
        env.address(),
        copyd_tests::bins::copyctl().display(),
        source.display(),
        copy.display()
    );
    let out = copyd_tests::cmd::run(
        std::process::Command::new("script")
            .args(["-qec", &command])
            .arg(&typescript),
    );
    out.assert_success();
    let screen = String::from_utf8_lossy(&fs::read(&typescript).unwrap()).replace('\r', "\n");
    assert!(screen.contains("%"), "{screen}");
    assert!(
        screen.contains("progress-source.bin"),
        "no current file in:\n{screen}"
    );
    assert!(
        screen.contains("files 0/1") || screen.contains("files 1/1"),
        "{screen}"
    );
    assert!(screen.contains("ETA"), "{screen}");
    // The last phase shows only when the wait for the disk outlasts a
    // progress report (250 ms), which a 6 MB file's need not: what is
    // checked is that a durable copy never calls it placing.
    assert!(!screen.contains("placing the copies"), "{screen}");
    assert!(screen.contains("1 files completed"), "{screen}");
    assert_eq!(fs::read(&copy).unwrap().len(), 6_000_000);

    // Without sync there is no wait for the disk to show.
    let unsynced = env.path("progress-unsynced.bin");
    let out = copyd_tests::cmd::run(
        std::process::Command::new("script")
            .args([
                "-qec",
                &format!(
                    "COPYD_ADDRESS='{}' NO_COLOR=1 {} copy --no-sync --progress --rate-limit 3MB/s {} {}",
                    env.address(),
                    copyd_tests::bins::copyctl().display(),
                    source.display(),
                    unsynced.display()
                ),
            ])
            .arg(&typescript),
    );
    out.assert_success();
    let screen = String::from_utf8_lossy(&fs::read(&typescript).unwrap()).replace('\r', "\n");
    assert!(!screen.contains("syncing to disk"), "{screen}");
    assert!(screen.contains("1 files completed"), "{screen}");
}
