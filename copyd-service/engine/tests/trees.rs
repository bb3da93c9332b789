//! Whole trees: an archive copy (Preserve::all) of a real tree must be what
//! `rsync -aHX` calls identical, whatever the number of worker threads.

mod common;

use std::path::Path;

use common::{copy, copy_with, rsync_differences, small_files_tree, write_file};
use copyd_engine::{EngineSet, Options, Preserve};

fn archive(source: &Path, target: &Path, workers: usize) -> copyd_engine::ProgressSnapshot {
    let options = Options {
        recursive: true,
        preserve: Preserve::all(),
        workers,
        ..Options::default()
    };
    let copied = copy_with(source, target, options, &EngineSet::probe()).unwrap();
    let snap = copied.progress.snapshot();
    assert_eq!(
        (snap.bytes_done, snap.files_done),
        (snap.bytes_total, snap.files_total)
    );
    snap
}

/// This crate's own directory (not the whole service crate, which others
/// edit while tests run: a file changing between copy and check would make
/// the test flaky).
#[test]
fn archive_of_the_engine_crate() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let target = dir.path().join("engine");
    archive(source, &target, 0);
    assert_eq!(rsync_differences(source, &target), "");
}

/// /usr/share/doc: thousands of small files and symlinks, on several
/// workers, to ext4 and to tmpfs.
#[test]
fn archive_of_usr_share_doc() {
    let source = Path::new("/usr/share/doc");
    if !source.is_dir() {
        eprintln!("SKIP: no /usr/share/doc here");
        return;
    }
    for base in ["/tmp", "/dev/shm"] {
        let dir = tempfile::tempdir_in(base).unwrap();
        let target = dir.path().join("doc");
        archive(source, &target, 4);
        assert_eq!(rsync_differences(source, &target), "", "to {base}");
    }
}

/// Serial and parallel copies of one tree (with hard links, symlinks,
/// empty and large files) are the same.
#[test]
fn parallel_and_serial_copies_agree() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    for d in 0..8 {
        let sub = tree.join(format!("d{d}/e{}", d % 3));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..40 {
            write_file(
                &sub.join(format!("f{f}")),
                (f * 997 + d * 13) % 70_000,
                (d * 100 + f) as u64,
            );
        }
        std::os::unix::fs::symlink("e0/f1", tree.join(format!("d{d}/link"))).unwrap();
    }
    write_file(&tree.join("big"), 30 << 20, 9);
    std::fs::hard_link(tree.join("big"), tree.join("d1/big-again")).unwrap();
    std::fs::File::create(tree.join("empty")).unwrap();

    let serial = dir.path().join("serial");
    let parallel = dir.path().join("parallel");
    let a = archive(&tree, &serial, 1);
    let b = archive(&tree, &parallel, 8);
    assert_eq!(a, b);
    assert_eq!(rsync_differences(&tree, &serial), "");
    assert_eq!(rsync_differences(&tree, &parallel), "");
    assert_eq!(rsync_differences(&serial, &parallel), "");
}

/// Cancelling a tree copy while several workers are busy stops them all and
/// leaves neither the target nor a temporary behind.
#[test]
fn cancelling_a_parallel_copy_leaves_nothing() {
    use copyd_engine::{resolve, run, Control, ErrorKind, Operation, Progress, Request};
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for f in 0..6 {
        write_file(&tree.join(format!("f{f}")), 4 << 20, f);
    }
    let resolved = resolve(Request {
        operation: Operation::Copy,
        sources: vec![tree.clone()],
        destination: dir.path().join("copy"),
        options: Options {
            recursive: true,
            workers: 3,
            rate_limit: 2 << 20, // 2 MiB/s: the copy would take 12 s
            ..Options::default()
        },
    })
    .unwrap();
    let (progress, control) = (Progress::new(), Control::default());
    let engines = EngineSet::probe();
    let result = std::thread::scope(|scope| {
        let copying = scope.spawn(|| run(&resolved, &engines, "cancel", &progress, &control));
        std::thread::sleep(std::time::Duration::from_millis(300));
        control.cancel();
        copying.join().unwrap()
    });
    assert_eq!(result.unwrap_err().kind, ErrorKind::Cancelled);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["tree"], "only the source may remain");
}

/// With the default preserve (mode, times), copies in a tree are created
/// with their final mode where the umask would not change it, and given it
/// afterwards where it would: every mode and time comes out the source's,
/// to ext4 and to tmpfs.
#[test]
fn default_preserve_keeps_every_mode_and_time() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    small_files_tree(&tree);
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    for target in [dir.path().join("copy"), shm.path().join("copy")] {
        copy(&tree, &target, "auto", Preserve::default()).unwrap();
        assert_eq!(
            rsync_differences(&tree, &target),
            "",
            "{}",
            target.display()
        );
    }
}
