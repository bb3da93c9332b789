//! Recovery and cleanup when others write where copyd works: another user
//! puts files at a job's target names while copyd is down, a user swaps a
//! directory for a symlink before cancelling an interrupted job, two copyds
//! build in one directory. Nothing may be lost, nothing of someone else's
//! touched, and no file reached that the job's user could not reach.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use copyd_tests::busctl::{parse_busctl_object_path, Busctl};
use copyd_tests::mounts::Tmpfs;
use copyd_tests::polkit::{chown, ensure_user, SecureEnv, OTHER, USER};
use copyd_tests::tree::copyd_temp_leftovers;

const FILES: usize = 100;
const FILE_BYTES: usize = 10_000;

fn content(i: usize) -> Vec<u8> {
    (0..FILE_BYTES).map(|n| (n * 31 + i * 7) as u8).collect()
}

/// Waits until the job has placed at least `files` files (FilesDone), and
/// is still running.
fn wait_files_done(busctl: &Busctl, job: &str, files: u64) {
    busctl.wait_job_state(job, Duration::from_secs(60), |state| {
        assert!(
            ["queued", "running"].contains(&state),
            "the job ended before the kill: {state}"
        );
        busctl.job_u64(job, "FilesDone") >= files
    });
}

/// Issue 14.1: user A moves 100 files into a sticky directory on another
/// file system; copyd is killed midway; user B makes files at the target
/// names still free; copyd restarts and resumes the job. Before, recovery
/// took B's files for A's copies ("started, no temporary, target there")
/// and deleted A's sources: 48 files lost. Now only the inode recorded
/// before each rename proves a copy, so B's files are conflicts (the job
/// fails, listing them), their sources stay, and nothing is lost.
#[test]
fn a_resumed_move_keeps_every_source_whose_copy_it_cannot_prove() {
    let Some(mut env) = SecureEnv::start() else {
        return;
    };
    let (user, other) = (ensure_user(USER), ensure_user(OTHER));
    let sources_dir = env.user_dir(USER, "move-sources");
    let sources: Vec<PathBuf> = (0..FILES)
        .map(|i| {
            let path = sources_dir.join(format!("f{i:03}"));
            fs::write(&path, content(i)).unwrap();
            chown(&path, user);
            path
        })
        .collect();
    // Another file system (a small tmpfs), sticky and world-writable, as
    // /tmp is.
    let shared = Tmpfs::mount(&env.path("shared"));
    let source_refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let out = env.start_as(
        USER,
        "Move",
        &source_refs,
        shared.path(),
        &["rate-limit", "t", "200000"],
    );
    out.assert_success();
    let job = parse_busctl_object_path(&out.stdout_str());
    let address = env.address().to_owned();
    let busctl = Busctl::new(&address);
    // As in the report: killed after about 2.5 s, once some copies are in
    // place and others are not.
    wait_files_done(&busctl, &job, 45);
    let placed = |i: &usize| shared.path().join(format!("f{i:03}")).exists();
    busctl.wait_job_state(&job, Duration::from_secs(30), |_| {
        (0..FILES).any(|i| placed(&i))
    });

    let mut planted = Vec::new();
    env.daemon.crash_and_restart_after(&env.bus, || {
        for i in 0..FILES {
            let target = shared.path().join(format!("f{i:03}"));
            if fs::symlink_metadata(&target).is_err() {
                fs::write(&target, b"B's own file").unwrap();
                chown(&target, other);
                planted.push(i);
            }
        }
    });
    assert!(
        !planted.is_empty(),
        "every file was moved before the kill: nothing was tested"
    );
    let state = busctl.wait_job_end(&job, Duration::from_secs(120));
    assert_eq!(state, "failed", "B's files are conflicts the job reports");

    let mut moved = 0;
    for (i, source) in sources.iter().enumerate() {
        let target = shared.path().join(format!("f{i:03}"));
        let at_target = fs::symlink_metadata(&target).unwrap();
        if planted.contains(&i) {
            assert_eq!(
                fs::read(&target).unwrap(),
                b"B's own file",
                "B's file changed"
            );
            assert_eq!(at_target.uid(), other.uid);
            assert_eq!(
                fs::read(source).unwrap(),
                content(i),
                "the source of a file whose copy was never made was deleted: {}",
                source.display()
            );
        } else if fs::symlink_metadata(source).is_err() {
            assert_eq!(
                fs::read(&target).unwrap(),
                content(i),
                "{}",
                target.display()
            );
            assert_eq!(at_target.uid(), user.uid);
            moved += 1;
        }
    }
    assert!(moved > 0, "nothing was moved");
    let failed = busctl.job_prop(&job, "FailedFiles").to_string();
    for i in &planted {
        assert!(
            failed.contains(&format!("f{i:03}")),
            "f{i:03} is not in FailedFiles: {failed}"
        );
    }
    let left: Vec<_> = copyd_temp_leftovers(shared.path())
        .into_iter()
        .map(|name| {
            (
                fs::symlink_metadata(shared.path().join(&name)).map(|m| m.uid()),
                name,
            )
        })
        .collect();
    assert!(
        left.is_empty(),
        "temporaries left (owner, name): {left:?}; error: {}",
        busctl.job_prop(&job, "ErrorMessage")
    );
}

/// Issue 14.3: cancelling an interrupted job removed its temporaries as
/// root, by path. A user whose job was interrupted could swap the
/// directory holding the temporary for a symlink to a directory only root
/// may change, and have root delete what stood there under that name. Now
/// the cleanup runs as the job's user, through the directory it opens, and
/// removes only what is provably the job's own: the root-only file stays.
/// The same cancel without the swap removes the job's temporary.
#[test]
fn cancelling_an_interrupted_job_cleans_up_as_its_user_only() {
    let Some(mut env) = SecureEnv::start_with("auto_resume = false\nserialize_per_disk = false")
    else {
        return;
    };
    let user = ensure_user(USER);
    let home = env.user_dir(USER, "cancel-home");
    let source = home.join("tree");
    fs::create_dir(&source).unwrap();
    for i in 0..200 {
        fs::write(source.join(format!("f{i:03}")), content(i)).unwrap();
    }
    copyd_tests::cmd::run(std::process::Command::new("chown").args([
        "-R",
        &format!("{}:{}", user.uid, user.gid),
        source.to_str().unwrap(),
    ]))
    .assert_success();
    let (plain, swapped) = (home.join("plain"), home.join("swapped"));
    for dir in [&plain, &swapped] {
        fs::create_dir(dir).unwrap();
        chown(dir, user);
    }
    let address = env.address().to_owned();
    let busctl = Busctl::new(&address);
    let jobs: Vec<String> = [&plain, &swapped]
        .iter()
        .map(|dir| {
            let out = env.start_as(
                USER,
                "Copy",
                &[&source],
                &dir.join("copy"),
                &["recursive", "b", "true", "rate-limit", "t", "200000"],
            );
            out.assert_success();
            parse_busctl_object_path(&out.stdout_str())
        })
        .collect();
    for job in &jobs {
        wait_files_done(&busctl, job, 5);
    }
    let temp_name = |dir: &Path| {
        let found = copyd_temp_leftovers(dir);
        assert_eq!(
            found.len(),
            1,
            "one temporary tree in {}: {found:?}",
            dir.display()
        );
        found[0].file_name().unwrap().to_owned()
    };
    let swapped_temp = temp_name(&swapped);
    temp_name(&plain);

    // Only root may change this directory; it holds a tree named like the
    // job's temporary.
    let vault = env.path("vault");
    fs::create_dir(&vault).unwrap();
    fs::set_permissions(&vault, fs::Permissions::from_mode(0o700)).unwrap();
    let precious = vault.join(&swapped_temp).join("precious");
    fs::create_dir(precious.parent().unwrap()).unwrap();
    fs::write(&precious, b"root's").unwrap();

    env.daemon.crash_and_restart_after(&env.bus, || {
        // What the user may do to their own directory while copyd is down.
        fs::rename(&swapped, home.join("swapped-away")).unwrap();
        std::os::unix::fs::symlink(&vault, &swapped).unwrap();
        std::os::unix::fs::lchown(&swapped, Some(user.uid), Some(user.gid)).unwrap();
    });
    for job in &jobs {
        assert_eq!(busctl.job_state(job), "interrupted");
        let out = env.busctl_as(
            USER,
            &[
                "call",
                copyd_tests::BUS_NAME,
                job.as_str(),
                copyd_tests::JOB_IFACE,
                "Cancel",
                "a{sv}",
                "0",
            ],
        );
        out.assert_success();
        assert_eq!(
            busctl.wait_job_end(job, Duration::from_secs(30)),
            "cancelled"
        );
    }
    assert_eq!(
        fs::read(&precious).unwrap(),
        b"root's",
        "the cancel deleted through the user's symlink"
    );
    let left = copyd_temp_leftovers(&plain);
    assert!(
        left.is_empty(),
        "the plain job's temporary stayed: {left:?}"
    );
}

/// Where a job writes is its owner's business: GetHealth lists the file
/// systems of a user's running job to that user and to root, not to
/// another user.
#[test]
fn health_shows_a_users_file_systems_only_to_them_and_root() {
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let user = ensure_user(USER);
    let home = env.user_dir(USER, "health-home");
    let source = home.join("big");
    copyd_tests::tree::make_big_file(&source, 8 << 20, 9);
    chown(&source, user);
    let private = Tmpfs::mount(&env.path("health-private"));
    chown(private.path(), user);
    let out = env.start_as(
        USER,
        "Copy",
        &[&source],
        &private.path().join("copy"),
        &["rate-limit", "t", "1000000"],
    );
    out.assert_success();
    let job = parse_busctl_object_path(&out.stdout_str());
    let address = env.address().to_owned();
    let busctl = Busctl::new(&address);
    wait_files_done(&busctl, &job, 0);
    let mount = private.path().to_str().unwrap().to_owned();
    let sees = |who: Option<&str>| {
        let args = [
            "--json=short",
            "call",
            copyd_tests::BUS_NAME,
            copyd_tests::MANAGER_PATH,
            copyd_tests::MANAGER_IFACE,
            "GetHealth",
        ];
        let out = match who {
            Some(user) => env.busctl_as(user, &args),
            None => {
                let mut c = std::process::Command::new("busctl");
                c.arg(format!("--address={address}")).args(args);
                copyd_tests::cmd::run(&mut c)
            }
        };
        out.assert_success();
        out.stdout_str().contains(&mount)
    };
    assert!(
        sees(Some(USER)),
        "the owner does not see their job's file system"
    );
    assert!(sees(None), "root does not see it");
    assert!(!sees(Some(OTHER)), "another user sees where the job writes");
    busctl.cancel(&job).assert_success();
}
