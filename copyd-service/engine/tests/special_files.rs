//! FIFOs, sockets and device nodes: made anew in the copy, as `cp -a` and
//! `rsync -a` make them, never opened (a FIFO without a writer would block
//! a reader forever); a device node only where the kernel lets the job's
//! thread make one.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use common::{
    as_ordinary_user, copy, copy_with, rsync_differences, set_odd_times, write_file, ORDINARY_USER,
};
use copyd_engine::{EngineSet, ErrorKind, Options, Preserve};
use rustix::fs::{FileType, Mode, CWD};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn make(path: &Path, file_type: FileType, device: u64) {
    rustix::fs::mknodat(CWD, path, file_type, Mode::from_raw_mode(0o640), device)
        .unwrap_or_else(|err| panic!("mknod {}: {err}", path.display()));
}

/// A tree with one of each kind of special file (devices only as root:
/// /dev/null's numbers, and a loop device's), odd times and, as root,
/// another owner.
fn tree_of_specials(tree: &Path) -> Vec<&'static str> {
    fs::create_dir_all(tree.join("sub")).unwrap();
    write_file(&tree.join("sub/file"), 5000, 1);
    make(&tree.join("fifo"), FileType::Fifo, 0);
    make(&tree.join("sub/socket"), FileType::Socket, 0);
    let mut names = vec!["fifo", "sub/socket"];
    if is_root() {
        make(
            &tree.join("sub/null"),
            FileType::CharacterDevice,
            rustix::fs::makedev(1, 3),
        );
        make(
            &tree.join("loop"),
            FileType::BlockDevice,
            rustix::fs::makedev(7, 200),
        );
        names.extend(["sub/null", "loop"]);
        for name in &names {
            rustix::fs::chown(
                tree.join(name),
                Some(rustix::fs::Uid::from_raw(99)),
                Some(rustix::fs::Gid::from_raw(98)),
            )
            .unwrap();
        }
    }
    for name in &names {
        set_odd_times(&tree.join(name));
    }
    names
}

#[test]
fn an_archive_copy_makes_special_files_anew() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    let names = tree_of_specials(&tree);
    // The same file system, and another (tmpfs): mknod, never a copy.
    for base in [dir.path(), Path::new("/dev/shm")] {
        let scratch = tempfile::tempdir_in(base).unwrap();
        let target = scratch.path().join("copy");
        let copied = copy(&tree, &target, "auto", Preserve::all()).unwrap();
        assert!(
            copied.outcome.failures.is_empty(),
            "{:?}",
            copied.outcome.failures
        );
        for name in &names {
            let (a, b) = (
                fs::symlink_metadata(tree.join(name)).unwrap(),
                fs::symlink_metadata(target.join(name)).unwrap(),
            );
            let kind = |m: &fs::Metadata| {
                let t = m.file_type();
                (
                    t.is_fifo(),
                    t.is_socket(),
                    t.is_char_device(),
                    t.is_block_device(),
                )
            };
            assert_eq!(kind(&a), kind(&b), "{name}: kind");
            assert_ne!(a.ino(), b.ino(), "{name}: a new node, not a link");
            assert_eq!(
                (
                    a.mode(),
                    a.rdev(),
                    a.uid(),
                    a.gid(),
                    a.mtime(),
                    a.mtime_nsec()
                ),
                (
                    b.mode(),
                    b.rdev(),
                    b.uid(),
                    b.gid(),
                    b.mtime(),
                    b.mtime_nsec()
                ),
                "{name}: mode, device, owner, times"
            );
        }
        // rsync -a includes -D (devices and specials): nothing to do.
        assert_eq!(
            rsync_differences(&tree, &target),
            "",
            "to {}",
            base.display()
        );
        let snap = copied.progress.snapshot();
        assert_eq!(snap.files_done, snap.files_total);
    }
}

/// A FIFO named alone is made anew, not read: reading one that has no
/// writer would never end.
#[test]
fn a_lone_fifo_is_made_anew_not_read() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let fifo = dir.path().join("fifo");
    make(&fifo, FileType::Fifo, 0);
    let target = dir.path().join("fifo-copy");
    let (done, finished) = std::sync::mpsc::channel();
    let (from, to) = (fifo.clone(), target.clone());
    std::thread::spawn(move || {
        let options = Options {
            preserve: Preserve::default(),
            ..Options::default()
        };
        let _ = done.send(copy_with(&from, &to, options, &EngineSet::probe()).map(|_| ()));
    });
    finished
        .recv_timeout(Duration::from_secs(20))
        .expect("copying a FIFO must not block")
        .unwrap();
    assert!(fs::symlink_metadata(&target).unwrap().file_type().is_fifo());
    // Nothing is left under a temporary name.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// A thread without CAP_MKNOD (an unprivileged job's) cannot make a device
/// node: that node fails alone, the rest of the tree is copied, and no
/// node of any kind appears in its place. FIFOs and sockets need no
/// privilege.
#[test]
fn a_device_node_the_caller_may_not_make_fails_alone() {
    if !is_root() {
        eprintln!("SKIP: needs root to make a device node and switch users");
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let tree = dir.path().join("tree");
    tree_of_specials(&tree);
    let target = dir.path().join("copy");
    let copied = as_ordinary_user(|| {
        let options = Options {
            recursive: true,
            preserve: Preserve::all(),
            ..Options::default()
        };
        copy_with(&tree, &target, options, &EngineSet::probe()).unwrap()
    });
    let mut failed: Vec<_> = copied
        .outcome
        .failures
        .iter()
        .map(
            |copyd_engine::Failure {
                 source: path,
                 error: err,
                 ..
             }| {
                assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
                assert!(err.to_string().contains("device node"), "{err}");
                path.strip_prefix(&tree).unwrap().to_path_buf()
            },
        )
        .collect();
    failed.sort();
    assert_eq!(failed, [Path::new("loop"), Path::new("sub/null")]);
    for name in ["loop", "sub/null"] {
        assert!(fs::symlink_metadata(target.join(name)).is_err(), "{name}");
    }
    assert_eq!(
        fs::read(target.join("sub/file")).unwrap(),
        fs::read(tree.join("sub/file")).unwrap()
    );
    for name in ["fifo", "sub/socket"] {
        let meta = fs::symlink_metadata(target.join(name)).unwrap();
        assert_eq!(meta.uid(), ORDINARY_USER, "{name}: the caller's");
    }
}

/// Moved to another file system, a tree's special files are made anew
/// there and the source goes only after.
#[test]
fn a_move_across_file_systems_takes_special_files_along() {
    use copyd_engine::{resolve, run, Control, Operation, Progress, Request};
    let from = tempfile::tempdir_in("/dev/shm").unwrap();
    let to = tempfile::tempdir_in("/tmp").unwrap();
    let tree = from.path().join("tree");
    let names = tree_of_specials(&tree);
    let target = to.path().join("moved");
    let resolved = resolve(Request {
        operation: Operation::Move,
        sources: vec![tree.clone()],
        destination: target.clone(),
        options: Options {
            preserve: Preserve::all(),
            ..Options::default()
        },
    })
    .unwrap();
    let outcome = run(
        &resolved,
        &EngineSet::probe(),
        "test",
        &Progress::new(),
        &Control::default(),
    )
    .unwrap();
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert!(!tree.exists(), "the source is gone");
    for name in names {
        let kind = fs::symlink_metadata(target.join(name)).unwrap().file_type();
        assert!(
            !kind.is_file() && !kind.is_dir() && !kind.is_symlink(),
            "{name}"
        );
    }
}

/// A file swapped for a FIFO after the walk (its owner's doing) fails alone
/// as a vanished file; the copy neither opens it for reading (which would
/// wait for a writer forever, holding the job and its disk's place in the
/// queue) nor stops.
#[test]
fn a_file_replaced_by_a_fifo_mid_copy_is_not_waited_on() {
    // auto copies the small files one by one; io_uring by name takes them
    // in a batch, opening them in the ring.
    for engine in ["auto", "io_uring"] {
        if !EngineSet::probe().names().contains(&engine) && engine != "auto" {
            eprintln!("SKIP {engine}: not usable here");
            continue;
        }
        a_fifo_swapped_in_mid_copy(engine);
    }
}

fn a_fifo_swapped_in_mid_copy(engine: &'static str) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    // Copied first (large files go first), slowly: the swap happens meanwhile.
    write_file(&tree.join("big"), 4 << 20, 1);
    for n in 0..3 {
        write_file(&tree.join(format!("small{n}")), 1000, n);
    }
    let target = dir.path().join("copy");
    let (done, finished) = std::sync::mpsc::channel();
    let (from, to) = (tree.clone(), target.clone());
    std::thread::spawn(move || {
        let options = Options {
            recursive: true,
            workers: 1,
            rate_limit: 2 << 20,
            engine: engine.into(),
            ..Options::default()
        };
        let _ = done.send(copy_with(&from, &to, options, &EngineSet::probe()));
    });
    std::thread::sleep(Duration::from_millis(300));
    let swapped = tree.join("small1");
    fs::remove_file(&swapped).unwrap();
    make(&swapped, FileType::Fifo, 0);
    let copied = finished
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{engine}: the copy waited on the FIFO"))
        .unwrap();
    let failed: Vec<_> = copied
        .outcome
        .failures
        .iter()
        .map(|failure| failure.source.clone())
        .collect();
    assert_eq!(failed, [swapped], "{:?}", copied.outcome.failures);
    assert!(copied.outcome.failures[0]
        .error
        .to_string()
        .contains("no longer a regular file"));
    assert_eq!(
        fs::read(target.join("small2")).unwrap(),
        fs::read(tree.join("small2")).unwrap()
    );
    assert!(fs::symlink_metadata(target.join("small1")).is_err());
}
