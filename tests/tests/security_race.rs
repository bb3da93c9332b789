//! A symlink swapped into the destination's path while copyd copies must
//! never let a user write where they could not: a racing thread flips
//! `dst/sub` between a real directory of the user and a symlink to a
//! root-owned directory (RENAME_EXCHANGE, atomic), while the user copies
//! into `dst/sub/` over and over. Afterwards the root-owned directory must
//! hold nothing. Three scenarios (a file, a tree, a move), each for
//! RACE_SECONDS, run in parallel. (Needs root and polkitd; skips otherwise.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use copyd_tests::polkit::{chown, ensure_user, SecureEnv, USER};
use copyd_tests::tree::make_tree;

const RACE_SECONDS: u64 = 30;

#[derive(Clone, Copy, Debug)]
enum Scenario {
    File,
    Tree,
    Move,
}

fn lchown(path: &Path, ids: copyd_tests::polkit::Ids) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(ids.uid)),
        Some(rustix::fs::Gid::from_raw(ids.gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

fn chown_tree(root: &Path, ids: copyd_tests::polkit::Ids) {
    lchown(root, ids);
    if fs::symlink_metadata(root).unwrap().is_dir() {
        for entry in fs::read_dir(root).unwrap() {
            chown_tree(&entry.unwrap().path(), ids);
        }
    }
}

fn race(scenario: Scenario, target_mode: u32) {
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let user = ensure_user(USER);
    // The root-owned place the user must never write to.
    let target = env.path("root-target");
    fs::create_dir(&target).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(target_mode)).unwrap();
    // The user's destination: dst/sub and dst/alt, one a real directory,
    // the other a symlink to the root-owned one; the racer swaps them.
    let dst = env.user_dir(USER, "dst");
    fs::create_dir(dst.join("sub")).unwrap();
    chown(&dst.join("sub"), user);
    std::os::unix::fs::symlink(&target, dst.join("alt")).unwrap();
    lchown(&dst.join("alt"), user);
    // The sources.
    let src = env.user_dir(USER, "src");
    let file = src.join("file.txt");
    fs::write(&file, vec![b'x'; 64 * 1024]).unwrap();
    let tree = src.join("tree");
    make_tree(&tree, 12, 7);
    chown_tree(&src, user);

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let racer = {
        let (stop, swaps, dst) = (stop.clone(), swaps.clone(), dst.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    dst.join("sub"),
                    rustix::fs::CWD,
                    dst.join("alt"),
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(RACE_SECONDS);
    let (mut rounds, mut ok, mut failed) = (0u64, 0u64, 0u64);
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    while Instant::now() < deadline {
        rounds += 1;
        let into = dst.join("sub/");
        let out = match scenario {
            Scenario::File => env.copyctl_as(
                USER,
                &copyd_tests::osargs!["copy", "--on-conflict", "overwrite", &file, &into],
            ),
            Scenario::Tree => env.copyctl_as(
                USER,
                &copyd_tests::osargs!["copy", "-r", "--on-conflict", "overwrite", &tree, &into],
            ),
            Scenario::Move => {
                // A fresh source every round, the user's own.
                let moving = src.join(format!("move-{rounds}.txt"));
                fs::write(&moving, b"moving").unwrap();
                chown(&moving, user);
                env.copyctl_as(
                    USER,
                    &copyd_tests::osargs!["move", "--on-conflict", "overwrite", &moving, &into],
                )
            }
        };
        if out.success() {
            ok += 1;
        } else {
            failed += 1;
            let text = out.stderr_str();
            let key = text
                .split_whitespace()
                .find(|w| w.contains("Error.") || w.contains("denied") || w.contains("Denied"))
                .unwrap_or("other")
                .to_string();
            *errors.entry(key).or_default() += 1;
        }
        // Nothing may have appeared in the root-owned directory, ever.
        let leaked: Vec<PathBuf> = fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            leaked.is_empty(),
            "{scenario:?}: round {rounds} wrote into the root-owned {}: {leaked:?}\n{out}",
            target.display()
        );
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    let leaked: Vec<PathBuf> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(leaked.is_empty(), "{scenario:?}: {leaked:?}");
    eprintln!(
        "race {scenario:?} (target mode {target_mode:o}): {rounds} rounds in {RACE_SECONDS} s, {ok} succeeded (into the real directory), {failed} refused {errors:?}, {} swaps; root-owned target still empty",
        swaps.load(Ordering::Relaxed)
    );
    assert!(rounds >= 10, "too few rounds to mean anything: {rounds}");
    assert!(
        failed > 0,
        "the race never hit: every round found the real directory"
    );
    let mut env = env;
    assert!(env.daemon.is_running());
}

#[test]
fn race_a_file_into_a_swapped_directory() {
    race(Scenario::File, 0o755);
}

#[test]
fn race_a_tree_into_a_swapped_directory() {
    race(Scenario::Tree, 0o700);
}

#[test]
fn race_a_move_into_a_swapped_directory() {
    race(Scenario::Move, 0o755);
}
