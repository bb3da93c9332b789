//! The `sync` option. With it (the default) a copy reports durable progress
//! inside an item: group commits of a tree's files and a large file's
//! durable offsets. Without it nothing inside an item is durable, so nothing
//! of the kind may be reported; items starting and finishing still are, the
//! copy is still complete and identical, and a move refuses to go without.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use common::Recorder;
use copyd_engine::fsutil::temp_path;
use copyd_engine::{
    resolve, run_resumable, Control, EngineSet, ErrorKind, Operation, Options, Progress, Request,
    ResumeState,
};

/// Test data: one byte-pattern per seed (the shared generator).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    common::pattern(len, seed.into())
}

/// 1 MiB/s: slow enough that a copy of 4 MiB outlasts the group-commit
/// (1 s) and offset-commit (2 s) intervals, so that with sync it must report.
const RATE: u64 = 1 << 20;

fn options(sync: bool) -> Options {
    Options {
        recursive: true,
        sync,
        // Byte by byte, throttled: no clone that would finish at once.
        engine: "standard".into(),
        rate_limit: RATE,
        workers: 1,
        ..Options::default()
    }
}

fn copy(source: &Path, target: &Path, options: Options, resume: &ResumeState) -> Recorder {
    let resolved = resolve(Request {
        operation: Operation::Copy,
        sources: vec![source.to_path_buf()],
        destination: target.to_path_buf(),
        options,
    })
    .unwrap();
    let journal = Recorder::default();
    run_resumable(
        &resolved,
        &EngineSet::probe(),
        "9",
        &Progress::new(),
        &Control::default(),
        resume,
        &journal,
    )
    .unwrap();
    journal
}

/// Contents, modes, times and symlinks as the source's.
fn assert_identical(source: &Path, target: &Path) {
    assert_eq!(common::rsync_differences(source, target), "");
}

/// 64 files of 64 KiB: 4 MiB.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("sub")).unwrap();
    for i in 0..64u8 {
        fs::write(root.join(format!("sub/f{i}")), pattern(64 << 10, i)).unwrap();
    }
    std::os::unix::fs::symlink("sub/f1", root.join("link")).unwrap();
}

fn tree(sync: bool) -> Recorder {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("src");
    make_tree(&source);
    let target = dir.path().join("dst");
    let journal = copy(&source, &target, options(sync), &ResumeState::default());
    assert_identical(&source, &target);
    assert!(!temp_path(&target, "9", 0).exists());
    journal
}

fn lone_file(sync: bool) -> Recorder {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("big");
    fs::write(&source, pattern(4 << 20, 3)).unwrap();
    let target = dir.path().join("copy");
    let journal = copy(&source, &target, options(sync), &ResumeState::default());
    assert_eq!(fs::read(&target).unwrap(), pattern(4 << 20, 3));
    assert!(!temp_path(&target, "9", 0).exists());
    journal
}

#[test]
fn a_tree_with_sync_reports_group_commits() {
    let journal = tree(true);
    assert!(
        journal
            .durable_reports()
            .iter()
            .any(|e| e.starts_with("durable 0")),
        "{:?}",
        journal.events()
    );
}

#[test]
fn a_tree_without_sync_reports_no_durable_files() {
    let journal = tree(false);
    assert_eq!(journal.events(), ["started 0", "built 0", "done 0"]);
}

#[test]
fn a_lone_file_with_sync_reports_its_durable_offset() {
    let journal = lone_file(true);
    assert!(
        journal
            .durable_reports()
            .iter()
            .any(|e| e.starts_with("offset 0")),
        "{:?}",
        journal.events()
    );
}

#[test]
fn a_lone_file_without_sync_reports_no_offset() {
    let journal = lone_file(false);
    assert_eq!(journal.events(), ["started 0", "built 0", "done 0"]);
}

/// What a run without sync that was killed leaves: its temporary tree,
/// with files complete, partial and of the right size but wrong bytes, and
/// a journal that vouches for none of them. The item carries on (no new
/// start), every file is copied again, and the result is identical.
#[test]
fn an_interrupted_item_without_sync_is_redone_whole() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("src");
    make_tree(&source);
    let target = dir.path().join("dst");
    let temp = temp_path(&target, "9", 0);
    fs::create_dir_all(temp.join("sub")).unwrap();
    fs::write(temp.join("sub/f0"), pattern(64 << 10, 0)).unwrap();
    fs::write(temp.join("sub/f1"), &pattern(64 << 10, 1)[..1000]).unwrap();
    fs::write(temp.join("sub/f2"), vec![0xEE; 64 << 10]).unwrap();
    std::os::unix::fs::symlink("elsewhere", temp.join("link")).unwrap();
    let resume = ResumeState {
        resuming: true,
        started: HashSet::from([0]),
        ..ResumeState::default()
    };
    let options = Options {
        rate_limit: 0,
        ..options(false)
    };
    let journal = copy(&source, &target, options, &resume);
    assert_identical(&source, &target);
    assert_eq!(
        fs::read_link(target.join("link")).unwrap(),
        Path::new("sub/f1")
    );
    assert!(!temp.exists());
    assert_eq!(journal.events(), ["built 0", "done 0"]);
}

#[test]
fn a_move_without_sync_is_refused_and_touches_nothing() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("src");
    make_tree(&source);
    let target = dir.path().join("dst");
    let err = resolve(Request {
        operation: Operation::Move,
        sources: vec![source.clone()],
        destination: target.clone(),
        options: Options {
            sync: false,
            ..Options::default()
        },
    })
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("durable"), "{}", err.message);
    assert!(source.join("sub/f0").exists());
    assert!(!target.exists());
}
