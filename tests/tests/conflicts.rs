//! on-conflict, file by file, through the daemon: a tree copied into a
//! copy of itself in which half the files exist, some older and some newer
//! than the source, plus files only the destination has.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use copyd_tests::TestEnv;

const OLD: u64 = 946_684_800; // 2000-01-01
const SOURCE_TIME: u64 = 1_577_836_800; // 2020-01-01
const NEW: u64 = 4_102_444_800; // 2100-01-01

fn set_mtime(path: &Path, secs: u64) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(time)
        .unwrap();
}

/// `src/f00..f19` and `src/sub/g00..g09`, all of time SOURCE_TIME.
fn source_tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..20 {
        let path = src.join(format!("f{i:02}"));
        fs::write(&path, format!("source f{i:02}")).unwrap();
        set_mtime(&path, SOURCE_TIME);
    }
    for i in 0..10 {
        let path = src.join(format!("sub/g{i:02}"));
        fs::write(&path, format!("source g{i:02}")).unwrap();
        set_mtime(&path, SOURCE_TIME);
    }
    src
}

/// `dst/src/` with f00..f09 (f00..f04 older than the source, f05..f09
/// newer), sub/g00..g04 (older), and files only it has.
fn destination(root: &Path) -> PathBuf {
    let dst = root.join("dst");
    let there = dst.join("src");
    fs::create_dir_all(there.join("sub")).unwrap();
    for i in 0..10 {
        let path = there.join(format!("f{i:02}"));
        fs::write(&path, format!("dest f{i:02}")).unwrap();
        set_mtime(&path, if i < 5 { OLD } else { NEW });
    }
    for i in 0..5 {
        let path = there.join(format!("sub/g{i:02}"));
        fs::write(&path, format!("dest g{i:02}")).unwrap();
        set_mtime(&path, OLD);
    }
    fs::write(there.join("only-here"), "mine").unwrap();
    fs::write(there.join("sub/only-here-too"), "mine too").unwrap();
    dst
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn copy_with(env: &TestEnv, policy: &str) -> (PathBuf, copyd_tests::cmd::CmdOutput) {
    let root = env.path(policy);
    let src = source_tree(&root);
    let dst = destination(&root);
    let out = env.copyctl(&[
        "copy".as_ref(),
        "-r".as_ref(),
        "--on-conflict".as_ref(),
        policy.as_ref(),
        src.as_os_str(),
        dst.as_os_str(),
    ]);
    (dst.join("src"), out)
}

/// What every merging policy leaves alike: the files the destination did
/// not have are copied, and the files only it has stay.
fn assert_merged(there: &Path) {
    for i in 10..20 {
        assert_eq!(
            read(&there.join(format!("f{i:02}"))),
            format!("source f{i:02}")
        );
    }
    for i in 5..10 {
        assert_eq!(
            read(&there.join(format!("sub/g{i:02}"))),
            format!("source g{i:02}")
        );
    }
    assert_eq!(read(&there.join("only-here")), "mine");
    assert_eq!(read(&there.join("sub/only-here-too")), "mine too");
    let temporaries: Vec<_> = copyd_tests::tree::copyd_temp_leftovers(there);
    assert!(temporaries.is_empty(), "{temporaries:?}");
}

#[test]
fn each_policy_decides_file_by_file_inside_a_tree() {
    let env = TestEnv::start();

    let (there, out) = copy_with(&env, "skip");
    out.assert_success();
    assert_merged(&there);
    for i in 0..10 {
        assert_eq!(
            read(&there.join(format!("f{i:02}"))),
            format!("dest f{i:02}")
        );
    }

    let (there, out) = copy_with(&env, "overwrite");
    out.assert_success();
    assert_merged(&there);
    for i in 0..10 {
        assert_eq!(
            read(&there.join(format!("f{i:02}"))),
            format!("source f{i:02}")
        );
    }
    for i in 0..5 {
        assert_eq!(
            read(&there.join(format!("sub/g{i:02}"))),
            format!("source g{i:02}")
        );
    }

    let (there, out) = copy_with(&env, "update");
    out.assert_success();
    assert_merged(&there);
    for i in 0..10 {
        let want = if i < 5 { "source" } else { "dest" };
        assert_eq!(
            read(&there.join(format!("f{i:02}"))),
            format!("{want} f{i:02}")
        );
    }

    let (there, out) = copy_with(&env, "rename");
    out.assert_success();
    assert_merged(&there);
    for i in 0..10 {
        assert_eq!(
            read(&there.join(format!("f{i:02}"))),
            format!("dest f{i:02}")
        );
        assert_eq!(
            read(&there.join(format!("f{i:02} (1)"))),
            format!("source f{i:02}")
        );
    }

    let (there, out) = copy_with(&env, "backup");
    out.assert_success();
    assert_merged(&there);
    for i in 0..10 {
        assert_eq!(
            read(&there.join(format!("f{i:02}"))),
            format!("source f{i:02}")
        );
        assert_eq!(
            read(&there.join(format!("f{i:02}~"))),
            format!("dest f{i:02}")
        );
    }

    // fail: refused, nothing changed.
    let (there, out) = copy_with(&env, "fail");
    assert!(!out.success());
    assert!(
        out.stderr_str().contains("Error.AlreadyExists"),
        "{}",
        out.stderr_str()
    );
    assert!(!there.join("f10").exists());
    assert_eq!(read(&there.join("f00")), "dest f00");
}

/// Lone files take the same policies: update keeps a newer file, backup
/// keeps the old one as name~, rename keeps both.
#[test]
fn lone_files_take_the_policies_too() {
    let env = TestEnv::start();
    let dir = env.path("lone");
    fs::create_dir(&dir).unwrap();
    let (source, target) = (dir.join("report.pdf"), dir.join("out/report.pdf"));
    fs::create_dir(dir.join("out")).unwrap();
    fs::write(&source, "new report").unwrap();
    set_mtime(&source, SOURCE_TIME);
    let reset = |secs| {
        fs::write(&target, "old report").unwrap();
        set_mtime(&target, secs);
    };
    let copy = |policy: &str| {
        env.copyctl(&[
            "copy".as_ref(),
            "--on-conflict".as_ref(),
            policy.as_ref(),
            source.as_os_str(),
            dir.join("out").as_os_str(),
        ])
        .assert_success();
    };
    reset(NEW);
    copy("update");
    assert_eq!(read(&target), "old report", "update replaced a newer file");
    reset(OLD);
    copy("update");
    assert_eq!(read(&target), "new report");
    reset(OLD);
    copy("backup");
    assert_eq!(read(&target), "new report");
    assert_eq!(read(&dir.join("out/report.pdf~")), "old report");
    reset(OLD);
    copy("rename");
    copy("rename");
    assert_eq!(read(&target), "old report");
    assert_eq!(read(&dir.join("out/report (1).pdf")), "new report");
    assert_eq!(read(&dir.join("out/report (2).pdf")), "new report");
}

/// Keep-both under a race: another process keeps creating `fNN (k)` names
/// while the copy runs. A name is claimed with RENAME_NOREPLACE, so none of
/// the racer's files is ever overwritten, and every copy lands somewhere.
#[test]
fn keep_both_never_overwrites_a_name_taken_meanwhile() {
    let env = TestEnv::start();
    let root = env.path("race");
    let src = source_tree(&root);
    let dst = destination(&root);
    let there = dst.join("src");
    // Taken before: the copies of f00..f09 cannot be "(1)".
    for i in 0..10 {
        fs::write(there.join(format!("f{i:02} (1)")), "racer").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (stop, there) = (Arc::clone(&stop), there.clone());
        std::thread::spawn(move || {
            let mut taken = Vec::new();
            'race: for k in 2..40 {
                for i in 0..10 {
                    if stop.load(Ordering::Relaxed) {
                        break 'race;
                    }
                    let name = there.join(format!("f{i:02} ({k})"));
                    if fs::File::options()
                        .write(true)
                        .create_new(true)
                        .open(&name)
                        .and_then(|mut f| std::io::Write::write_all(&mut f, b"racer"))
                        .is_ok()
                    {
                        taken.push(name);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            taken
        })
    };
    let out = env.copyctl(&[
        "copy".as_ref(),
        "-r".as_ref(),
        "--on-conflict".as_ref(),
        "rename".as_ref(),
        src.as_os_str(),
        dst.as_os_str(),
    ]);
    stop.store(true, Ordering::Relaxed);
    let taken = racer.join().unwrap();
    out.assert_success();
    for name in &taken {
        assert_eq!(read(name), "racer", "{} was overwritten", name.display());
    }
    for i in 0..10 {
        assert_eq!(read(&there.join(format!("f{i:02} (1)"))), "racer");
        let copies = (2..60)
            .map(|k| there.join(format!("f{i:02} ({k})")))
            .filter(|p| p.exists() && read(p) == format!("source f{i:02}"))
            .count();
        assert_eq!(copies, 1, "f{i:02}'s copy is not in exactly one place");
    }
}

/// The job counts what on-conflict did (the Conflicts property).
#[test]
fn the_job_counts_its_conflicts() {
    let env = TestEnv::start();
    let root = env.path("counted");
    let src = source_tree(&root);
    let dst = destination(&root);
    let busctl = env.busctl();
    let job = busctl.copy(
        &[&src],
        &dst,
        &["recursive", "b", "true", "on-conflict", "s", "update"],
    );
    assert_eq!(
        busctl.wait_job_end(&job, Duration::from_secs(60)),
        "completed"
    );
    let conflicts = busctl.job_prop(&job, "Conflicts");
    // f00..f04 and sub/g00..g04 older: updated; f05..f09 newer: skipped.
    assert_eq!(
        conflicts,
        serde_json::json!({"skipped": 5, "updated": 10}),
        "{conflicts}"
    );
}

/// on-conflict ask, answered by a Gio client as a file manager's dialog
/// would: each ConflictRaised gets the next answer, and "apply to all"
/// answers the rest without asking.
#[test]
fn ask_is_answered_by_a_gio_client() {
    let env = TestEnv::start();
    let root = env.path("asked");
    let src = source_tree(&root);
    let dst = destination(&root);
    let there = dst.join("src");
    let script = copyd_tests::repo_root().join("tests/clients/answer_conflicts.py");
    let out = copyd_tests::cmd::run(
        std::process::Command::new(copyd_tests::gio::python_gi())
            .arg(&script)
            .args(["--address", env.address()])
            .args(["--answer", "skip", "--answer", "overwrite"])
            .args(["--answer", "rename", "--answer", "backup:all"])
            .arg(&src)
            .arg(&dst),
    );
    out.assert_success();
    let report = out.json();
    assert_eq!(report["success"], true, "{report}");
    let asked: Vec<PathBuf> = report["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| PathBuf::from(c["target"].as_str().unwrap()))
        .collect();
    assert_eq!(asked.len(), 4, "asked after apply-to-all: {report}");
    let first = &report["conflicts"][0];
    assert_eq!(first["existing"]["type"], "file", "{first}");
    assert!(first["incoming"]["size"].as_u64().unwrap() > 0, "{first}");
    let source_of = |target: &Path| {
        let relative = target.strip_prefix(&there).unwrap();
        read(&src.join(relative))
    };
    let dest_text = |target: &Path| source_of(target).replace("source", "dest");
    assert_eq!(read(&asked[0]), dest_text(&asked[0]), "skip");
    assert_eq!(read(&asked[1]), source_of(&asked[1]), "overwrite");
    assert_eq!(read(&asked[2]), dest_text(&asked[2]), "rename");
    let beside = asked[2].with_file_name(format!(
        "{} (1)",
        asked[2].file_name().unwrap().to_str().unwrap()
    ));
    assert_eq!(read(&beside), source_of(&asked[2]), "rename");
    // Backed up: the fourth and every conflict after it.
    let all: Vec<PathBuf> = (0..10)
        .map(|i| there.join(format!("f{i:02}")))
        .chain((0..5).map(|i| there.join(format!("sub/g{i:02}"))))
        .collect();
    for target in all.iter().filter(|t| !asked[..3].contains(t)) {
        assert_eq!(read(target), source_of(target), "{}", target.display());
        let backup = target.with_file_name(format!(
            "{}~",
            target.file_name().unwrap().to_str().unwrap()
        ));
        assert_eq!(read(&backup), dest_text(target));
    }
    assert_merged(&there);
}

/// The dry run tells each conflict's fate by the merge's own rule, touches
/// nothing, and the copy then does exactly that.
#[test]
fn the_dry_run_foretells_each_decision() {
    let env = TestEnv::start();
    let root = env.path("foretold");
    let src = source_tree(&root);
    let dst = destination(&root);
    let before = copyd_tests::tree::snapshot(&dst);
    let mtime = |p: &Path| fs::metadata(p).unwrap().modified().unwrap();
    let times_before = (
        mtime(&dst),
        mtime(&dst.join("src")),
        mtime(&dst.join("src/sub")),
    );
    let args = |dry: bool| {
        let mut args: Vec<std::ffi::OsString> = ["--json", "copy", "-r", "--on-conflict", "update"]
            .iter()
            .map(Into::into)
            .collect();
        if dry {
            args.push("--dry-run".into());
        }
        args.push(src.clone().into());
        args.push(dst.clone().into());
        args
    };
    let plan = env.copyctl(&args(true));
    plan.assert_success();
    let report = plan.json();
    assert_eq!(
        report["decisions"],
        serde_json::json!({"merged": 2, "updated": 10, "skipped": 5}),
        "{report}"
    );
    assert_eq!(report["create"], 15, "{report}");
    // Same file system: every byte can stay in the kernel; one destination
    // file system, needing every byte; nothing the caller cannot do.
    assert_eq!(report["offloaded-bytes"], report["bytes"], "{report}");
    assert_eq!(report["memory-bytes"], 0, "{report}");
    assert_eq!(report["space"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["space"][0]["needed"], report["bytes"], "{report}");
    assert!(report["space"][0]["free"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(report["decided"].as_array().unwrap().len(), 17);
    assert_eq!(
        copyd_tests::tree::snapshot(&dst),
        before,
        "the dry run changed the tree"
    );
    assert_eq!(
        (
            mtime(&dst),
            mtime(&dst.join("src")),
            mtime(&dst.join("src/sub"))
        ),
        times_before
    );

    let copy = env.copyctl(&args(false));
    copy.assert_success();
    let job = copy.json()["path"].as_str().unwrap().to_owned();
    assert_eq!(
        env.busctl().job_prop(&job, "Conflicts"),
        serde_json::json!({"updated": 10, "skipped": 5})
    );
    let made = copyd_tests::tree::snapshot(&dst).len() - before.len();
    assert_eq!(made as u64, 15, "entries made");
}

/// `copyctl -i`, as cp -i: a question on the terminal for each taken
/// target; `y` overwrites, `n` keeps, a capital letter answers the rest.
#[test]
fn copyctl_i_asks_on_the_terminal() {
    use std::io::Write;
    let env = TestEnv::start();
    let root = env.path("interactive");
    let src = source_tree(&root);
    let dst = destination(&root);
    let there = dst.join("src");
    let mut child = std::process::Command::new(copyd_tests::bins::copyctl())
        .args(["copy", "-r", "-i"])
        .arg(&src)
        .arg(&dst)
        .env("COPYD_ADDRESS", env.address())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"y\nn\nB\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("copyctl: overwrite '").count(),
        3,
        "{stderr}"
    );
    let all: Vec<PathBuf> = (0..10)
        .map(|i| there.join(format!("f{i:02}")))
        .chain((0..5).map(|i| there.join(format!("sub/g{i:02}"))))
        .collect();
    let backed_up = all
        .iter()
        .filter(|t| {
            t.with_file_name(format!("{}~", t.file_name().unwrap().to_str().unwrap()))
                .exists()
        })
        .count();
    let kept = all.iter().filter(|t| read(t).starts_with("dest")).count();
    assert_eq!((kept, backed_up), (1, 13), "{stderr}");
    assert_merged(&there);
}
