//! A tree's small files copied through io_uring in batches (many files per
//! submission): the same bytes and metadata as the ordinary way, errors
//! reported as the ordinary way reports them, and every open made with the
//! caller's rights, not copyd's.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{copy, copy_with, rsync_differences, small_files_tree, write_file};
use copyd_engine::identity::{run_as, Credentials};
use copyd_engine::{EngineSet, ErrorKind, Options, Preserve};

fn io_uring_here() -> bool {
    let usable = EngineSet::probe().names().contains(&"io_uring");
    if !usable {
        eprintln!("SKIP: io_uring is not usable here");
    }
    usable
}

#[test]
fn a_tree_copied_in_batches_is_identical() {
    if !io_uring_here() {
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    let bytes = small_files_tree(&tree);

    let forced = dir.path().join("forced");
    let copied = copy(&tree, &forced, "io_uring", Preserve::all()).unwrap();
    assert_eq!(rsync_differences(&tree, &forced), "");
    assert_eq!(copied.engine_bytes.get("io_uring"), Some(&bytes));
    assert!(copied.outcome.failures.is_empty());

    // To a tmpfs, with the default preserve (mode, times): copies are
    // created with their final mode where the umask allows.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let to_tmpfs = shm.path().join("tree");
    let copied = copy(&tree, &to_tmpfs, "io_uring", Preserve::default()).unwrap();
    assert_eq!(rsync_differences(&tree, &to_tmpfs), "");
    assert_eq!(copied.engine_bytes.get("io_uring"), Some(&bytes));
}

/// A file only root may read, in the middle of a directory of small files,
/// copied by a job acting as an ordinary user: the batch's open must fail
/// with the user's rights (if the ring opened as root, the file would be
/// copied), the file fails alone, and the rest is copied.
#[test]
fn a_batch_opens_with_the_callers_rights() {
    if !io_uring_here() {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: needs root to act as another user");
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for f in 0..40 {
        write_file(&tree.join(format!("f{f:02}")), 1000 + f * 10, f as u64);
    }
    let secret = tree.join("f20");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let nobody = 65534;
    rustix::fs::chown(
        &out,
        Some(rustix::fs::Uid::from_raw(nobody)),
        Some(rustix::fs::Gid::from_raw(nobody)),
    )
    .unwrap();
    let creds = Credentials {
        uid: nobody,
        gid: nobody,
        groups: vec![nobody],
    };
    let options = Options {
        recursive: true,
        engine: "io_uring".into(),
        ..Options::default()
    };
    let target = out.join("tree");
    let copied = run_as(&creds, || {
        copy_with(&tree, &target, options, &EngineSet::probe())
    })
    .unwrap();
    let failures: Vec<_> = copied
        .outcome
        .failures
        .iter()
        .map(|failure| (failure.source.clone(), failure.error.kind))
        .collect();
    assert_eq!(failures, [(secret, ErrorKind::PermissionDenied)]);
    assert!(!target.join("f20").exists());
    for f in (0..40).filter(|f| *f != 20) {
        let name = format!("f{f:02}");
        assert_eq!(
            std::fs::read(tree.join(&name)).unwrap(),
            std::fs::read(target.join(&name)).unwrap()
        );
    }
    assert!(copied.engine_bytes.get("io_uring").copied().unwrap_or(0) > 0);
    // Creations are handed to the kernel's io-wq threads: they too must
    // act as the user, so the copies are the user's.
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(target.join("f00")).unwrap().uid();
    assert_eq!(owner, nobody, "a batch created a file as uid {owner}");
}
