//! The rule for a job in which some files cannot be copied (docs/JOBS.md,
//! "Failures of single files"): every file under a final name is whole and
//! correct, the good files are placed, the job ends failed with each bad
//! file in FailedFiles, copyctl names each and says `N of M files copied; K
//! failed` and exits 1, and a move keeps the sources of what failed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use copyd_tests::cmd::run;
use copyd_tests::mounts::Tmpfs;
use copyd_tests::polkit::{ensure_user, SecureEnv, USER};

/// A tree of 20 files owned by the test user, one of them (`d/secret`)
/// unreadable to that user.
fn tree_with_an_unreadable_file(root: &Path) {
    let ids = ensure_user(USER);
    fs::create_dir_all(root.join("d")).unwrap();
    for i in 0..19 {
        fs::write(root.join(format!("d/f{i:02}")), vec![i as u8; 1000 + i]).unwrap();
    }
    fs::write(root.join("d/secret"), b"not for the user").unwrap();
    run(Command::new("chown").args([
        "-R",
        &format!("{}:{}", ids.uid, ids.gid),
        root.to_str().unwrap(),
    ]))
    .assert_success();
    // Root's file now, mode 0600: the user's job cannot read it.
    run(Command::new("chown").args(["root:root", root.join("d/secret").to_str().unwrap()]))
        .assert_success();
    fs::set_permissions(root.join("d/secret"), fs::Permissions::from_mode(0o600)).unwrap();
}

fn assert_good_files_placed(source: &Path, copy: &Path) {
    for i in 0..19 {
        let name = format!("d/f{i:02}");
        assert_eq!(
            fs::read(copy.join(&name)).unwrap(),
            fs::read(source.join(&name)).unwrap(),
            "{name}"
        );
    }
    assert!(
        !copy.join("d/secret").exists(),
        "nothing of the failed file may stand in the copy"
    );
}

fn assert_reported(out: &copyd_tests::cmd::CmdOutput) {
    assert!(!out.success(), "copyctl must exit non-zero");
    assert_eq!(out.code, Some(1));
    let stderr = out.stderr_str();
    assert!(
        stderr.contains("cannot copy '") && stderr.contains("d/secret"),
        "the failed file is not named: {stderr}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("copyctl: ") && last.ends_with(" files copied; 1 failed"),
        "no summary line: {stderr}"
    );
}

#[test]
fn a_tree_with_an_unreadable_file_places_the_rest_and_says_so() {
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let home = env.user_dir(USER, "failed-files");
    let source = home.join("tree");
    tree_with_an_unreadable_file(&source);

    let copy = home.join("copy");
    // The dry run, as the user, names the file the user cannot read.
    let plan = env.copyctl_as(
        USER,
        &[
            "--json".as_ref(),
            "copy".as_ref(),
            "--dry-run".as_ref(),
            "-r".as_ref(),
            source.as_os_str(),
            copy.as_os_str(),
        ],
    );
    plan.assert_success();
    let problems = plan.json()["problems"].to_string();
    assert!(
        problems.contains("d/secret") && problems.contains("cannot read"),
        "{problems}"
    );
    assert!(!copy.exists(), "the dry run made something");
    let out = env.copyctl_as(
        USER,
        &[
            "copy".as_ref(),
            "-r".as_ref(),
            source.as_os_str(),
            copy.as_os_str(),
        ],
    );
    assert_reported(&out);
    assert_good_files_placed(&source, &copy);
    // The tree, d and 20 files: 22 entries, one failed.
    assert!(
        out.stderr_str()
            .contains("copyctl: 21 of 22 files copied; 1 failed"),
        "{}",
        out.stderr_str()
    );

    // A move of the same tree to another file system (on one, it is a
    // rename, which needs no reading): the good files arrive, and the
    // source stays whole (its item had a failure), so nothing is lost.
    let elsewhere = Tmpfs::mount(&env.path("elsewhere"));
    let moved = elsewhere.path().join("moved");
    let out = env.copyctl_as(
        USER,
        &["move".as_ref(), source.as_os_str(), moved.as_os_str()],
    );
    assert_reported(&out);
    assert_good_files_placed(&source, &moved);
    assert_eq!(
        fs::read(source.join("d/secret")).unwrap(),
        b"not for the user"
    );
    for i in 0..19 {
        assert!(
            source.join(format!("d/f{i:02}")).exists(),
            "a moved source went"
        );
    }
}
