//! Carrying on an interrupted transfer from what its journal said was
//! durable: the result must be byte-identical to an uninterrupted copy, and
//! what the journal did not vouch for must be redone, not trusted.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::Recorder;
use copyd_engine::fsutil::temp_path;
use copyd_engine::{
    resolve, run_resumable, Control, CopyIdentity, EngineSet, ErrorKind, FileIdentity, Operation,
    Options, Outcome, Progress, Request, Resolved, ResumeState,
};

fn request(source: &Path, destination: &Path) -> Request {
    Request {
        operation: Operation::Copy,
        sources: vec![source.to_path_buf()],
        destination: destination.to_path_buf(),
        options: Options {
            recursive: true,
            ..Options::default()
        },
    }
}

/// Test data: one byte-pattern per seed (the shared generator).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    common::pattern(len, seed.into())
}

#[test]
fn a_tree_carries_on_from_its_journal() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("src");
    fs::create_dir_all(source.join("sub")).unwrap();
    for i in 0..20u8 {
        fs::write(
            source.join(format!("sub/f{i}")),
            pattern(1000 + i as usize * 37, i),
        )
        .unwrap();
    }
    fs::write(source.join("big"), pattern(3 << 20, 9)).unwrap();
    let target = dir.path().join("dst");
    let resolved = resolve(request(&source, &target)).unwrap();

    // The state an interrupted run leaves: the temporary tree, with
    // - sub/f0..f9 complete and reported durable,
    // - sub/f10 complete but never reported (it must be redone),
    // - sub/f11 garbage of the right size (must be redone),
    // - big: its first MiB durable, the rest garbage.
    let temp = temp_path(&target, "77", 0);
    fs::create_dir_all(temp.join("sub")).unwrap();
    for i in 0..=10u8 {
        fs::write(
            temp.join(format!("sub/f{i}")),
            pattern(1000 + i as usize * 37, i),
        )
        .unwrap();
    }
    fs::write(temp.join("sub/f11"), vec![0xEE; 1000 + 11 * 37]).unwrap();
    let big = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(temp.join("big"))
        .unwrap();
    big.write_all_at(&pattern(3 << 20, 9)[..1 << 20], 0)
        .unwrap();
    big.write_all_at(&vec![0xEE; 1 << 20], 1 << 20).unwrap();
    let identity = FileIdentity::of(&fs::metadata(source.join("big")).unwrap());
    let resume = ResumeState {
        resuming: true,
        started: HashSet::from([0]),
        durable_files: HashMap::from([(
            0,
            (0..10)
                .map(|i| PathBuf::from(format!("sub/f{i}")))
                .collect(),
        )]),
        offsets: HashMap::from([((0, PathBuf::from("big")), (identity, 1 << 20))]),
        ..ResumeState::default()
    };

    let progress = Progress::new();
    let journal = Recorder::default();
    run_resumable(
        &resolved,
        &EngineSet::probe(),
        "77",
        &progress,
        &Control::default(),
        &resume,
        &journal,
    )
    .unwrap();

    let diff = std::process::Command::new("diff")
        .arg("-r")
        .arg(&source)
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    assert!(
        !temp.exists(),
        "the temporary tree must be renamed into place"
    );
    let snapshot = progress.snapshot();
    assert_eq!(
        snapshot.bytes_done, snapshot.bytes_total,
        "resumed bytes count as done"
    );
    let events = journal.events();
    assert!(
        !events.iter().any(|e| e.starts_with("started")),
        "carrying on is not a new start: {events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("done 0"));
}

#[test]
fn a_changed_source_restarts_its_file_from_zero() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("file");
    fs::write(&source, pattern(2 << 20, 1)).unwrap();
    let target = dir.path().join("copy");
    let resolved = resolve(request(&source, &target)).unwrap();
    let temp = temp_path(&target, "5", 0);
    fs::write(&temp, vec![0xAB; 1 << 20]).unwrap();
    // The journal's identity is of another file (another inode and size).
    let stale = FileIdentity {
        dev: 1,
        ino: 2,
        size: 3,
        mtime_ns: 4,
    };
    let resume = ResumeState {
        resuming: true,
        started: HashSet::from([0]),
        offsets: HashMap::from([((0, PathBuf::new()), (stale, 1 << 20))]),
        ..ResumeState::default()
    };
    run_resumable(
        &resolved,
        &EngineSet::probe(),
        "5",
        &Progress::new(),
        &Control::default(),
        &resume,
        &Recorder::default(),
    )
    .unwrap();
    assert_eq!(fs::read(&target).unwrap(), pattern(2 << 20, 1));
}

/// The inode at `path`, as the journal records a built copy's.
fn identity_of(path: &Path) -> CopyIdentity {
    CopyIdentity::of(&fs::symlink_metadata(path).unwrap())
}

#[test]
fn an_item_renamed_before_the_crash_is_recognised_as_done() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("file");
    fs::write(&source, b"done before the crash").unwrap();
    let target = dir.path().join("copy");
    let resolved = resolve(request(&source, &target)).unwrap();
    // The earlier run built the copy, recorded its inode, renamed it into
    // place, then died before saying it was done.
    fs::write(&target, b"done before the crash").unwrap();
    let built = Some(identity_of(&target));
    let (outcome, events) = resume_after_item_0_started(&resolved, "6", built);
    assert_eq!(events, ["done 0"]);
    assert!(outcome.failures.is_empty());
}

/// A file at the target that the journal did not record as the item's copy
/// (someone made it while copyd was down) is not taken for the copy: with
/// on-conflict fail the item fails, the file stays as it is, and a move
/// keeps its source.
#[test]
fn a_target_someone_else_made_during_the_crash_is_not_taken_for_the_copy() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("file");
    fs::write(&source, b"the only copy of this").unwrap();
    let target = dir.path().join("moved");
    let mut request = request(&source, &target);
    request.operation = Operation::Move;
    let resolved = resolve(request).unwrap();
    fs::write(&target, b"a stranger's file").unwrap();
    let (outcome, events) = resume_after_item_0_started(&resolved, "7", None);
    assert_eq!(events, Vec::<String>::new());
    assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
    assert_eq!(outcome.failures[0].error.kind, ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&source).unwrap(), b"the only copy of this");
    assert_eq!(fs::read(&target).unwrap(), b"a stranger's file");
    // Also when the journal recorded another inode (the real copy, since
    // replaced by someone).
    let (outcome, _) = resume_after_item_0_started(&resolved, "7", Some(identity_of(&source)));
    assert_eq!(outcome.failures.len(), 1);
    assert_eq!(fs::read(&source).unwrap(), b"the only copy of this");
}

/// A file at the item's temporary name that this job did not make (owned
/// by another user) is neither adopted nor removed: the item fails.
#[test]
fn a_foreign_file_at_the_temporary_name_is_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let source = dir.path().join("file");
    fs::write(&source, pattern(1 << 20, 2)).unwrap();
    fs::set_permissions(&source, fs::Permissions::from_mode(0o644)).unwrap();
    let target = dir.path().join("copy");
    let resolved = resolve(request(&source, &target)).unwrap();
    let temp = temp_path(&target, "4", 0);
    fs::write(&temp, b"planted").unwrap();
    rustix::fs::chown(
        &temp,
        Some(rustix::fs::Uid::from_raw(common::ORDINARY_USER + 1)),
        None,
    )
    .unwrap();
    // As the job's user, first as if resuming, then afresh.
    for resuming in [true, false] {
        let resume = ResumeState {
            resuming,
            started: HashSet::from([0]),
            ..ResumeState::default()
        };
        let result = common::as_ordinary_user(|| {
            run_resumable(
                &resolved,
                &EngineSet::probe(),
                "4",
                &Progress::new(),
                &Control::default(),
                &resume,
                &Recorder::default(),
            )
        });
        assert_eq!(result.unwrap_err().kind, ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&temp).unwrap(), b"planted");
        assert!(!target.exists());
    }
}

/// Resumes `resolved` (job `tag`) as after a crash once the journal said
/// item 0 had started and, with `built`, was built as that inode; what the
/// run returned and reported.
fn resume_after_item_0_started(
    resolved: &Resolved,
    tag: &str,
    built: Option<CopyIdentity>,
) -> (Outcome, Vec<String>) {
    let journal = Recorder::default();
    let resume = ResumeState {
        resuming: true,
        started: HashSet::from([0]),
        built: built.into_iter().map(|copy| (0, copy)).collect(),
        ..ResumeState::default()
    };
    let outcome = run_resumable(
        resolved,
        &EngineSet::probe(),
        tag,
        &Progress::new(),
        &Control::default(),
        &resume,
        &journal,
    )
    .unwrap();
    (outcome, journal.events())
}

#[test]
fn a_move_over_an_existing_target_that_ended_before_the_crash_is_done() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("file");
    fs::write(&source, b"moved before the crash").unwrap();
    let target = dir.path().join("moved");
    fs::write(&target, b"the old target").unwrap();
    let mut request = request(&source, &target);
    request.operation = Operation::Move;
    request.options.on_conflict = copyd_engine::Conflict::Overwrite;
    let resolved = resolve(request).unwrap();
    assert!(resolved.items[0].replace);
    // The earlier run recorded the source's inode, renamed it over the old
    // target, then died before its checkpoint said the item was done.
    let built = Some(identity_of(&source));
    fs::rename(&source, &target).unwrap();
    let (_, events) = resume_after_item_0_started(&resolved, "8", built);
    assert_eq!(events, ["done 0"]);
    assert_eq!(fs::read(&target).unwrap(), b"moved before the crash");
}

/// `copy -a a b tree e dir/` where a, b and tree/c are one file: an earlier
/// run placed `a` and died. The resumed run links b and tree/c to that copy
/// instead of copying the file twice more, as an uninterrupted run does
/// (metadata.rs); one whose copy was replaced since is copied instead.
#[test]
fn hard_links_to_items_placed_before_a_restart_stay_links() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let src = dir.path().join("src");
    common::hard_linked_sources(&src);
    fs::write(src.join("f"), pattern(3_000, 3)).unwrap();
    fs::hard_link(src.join("f"), src.join("g")).unwrap();
    let resumed = |into: &str, replace_f: bool| {
        let dst = dir.path().join(into);
        fs::create_dir(&dst).unwrap();
        let mut resolved = resolve(Request {
            operation: Operation::Copy,
            sources: ["a", "f", "b", "tree", "e", "g"]
                .iter()
                .map(|n| src.join(n))
                .collect(),
            destination: dst.clone(),
            options: Options {
                recursive: true,
                preserve: copyd_engine::Preserve::all(),
                ..Options::default()
            },
        })
        .unwrap();
        // The earlier run: a and f copied and recorded done, then the crash.
        let mut earlier = resolved.clone();
        earlier.items.truncate(2);
        copyd_engine::run(
            &earlier,
            &EngineSet::probe(),
            "9",
            &Progress::new(),
            &Control::default(),
        )
        .unwrap();
        if replace_f {
            // Someone replaced f's copy between the crash and the restart.
            fs::remove_file(dst.join("f")).unwrap();
            fs::write(dst.join("f"), b"not the copy").unwrap();
        }
        // As the daemon resumes it: the done items are skipped.
        resolved.items[0].skip = true;
        resolved.items[1].skip = true;
        let resume = ResumeState {
            resuming: true,
            placed: HashSet::from([0, 1]),
            ..ResumeState::default()
        };
        let progress = Progress::new();
        run_resumable(
            &resolved,
            &EngineSet::probe(),
            "9",
            &progress,
            &Control::default(),
            &resume,
            &Recorder::default(),
        )
        .unwrap();
        let copied: u64 = progress.engine_bytes().values().sum();
        (dst, copied)
    };

    let (dst, copied) = resumed("linked", false);
    let ino = |p: &str| fs::metadata(dst.join(p)).unwrap().ino();
    assert_eq!(ino("a"), ino("b"));
    assert_eq!(ino("a"), ino("tree/c"));
    assert_eq!(ino("tree/d"), ino("e"));
    assert_eq!(ino("f"), ino("g"));
    // Only tree/d was copied by the resumed run.
    assert_eq!(copied, 500);

    let (dst, copied) = resumed("replaced", true);
    let ino = |p: &str| fs::metadata(dst.join(p)).unwrap().ino();
    assert_eq!(ino("a"), ino("b"));
    assert_ne!(ino("f"), ino("g"));
    assert_eq!(fs::read(dst.join("g")).unwrap(), pattern(3_000, 3));
    assert_eq!(copied, 500 + 3_000);
}

/// An item whose target someone else took while copyd was down is not
/// built; what the earlier run left of it under its temporary name (its
/// own, by owner) goes, and the stranger's file stays.
#[test]
fn an_item_given_up_for_a_foreign_target_leaves_no_temporary() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("file");
    fs::write(&source, pattern(1 << 20, 3)).unwrap();
    let target = dir.path().join("copy");
    let resolved = resolve(request(&source, &target)).unwrap();
    let temp = temp_path(&target, "3", 0);
    fs::write(&temp, vec![0xAB; 1000]).unwrap();
    fs::write(&target, b"a stranger's file").unwrap();
    // As an ordinary user, in a sticky directory, as in /tmp.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(&source, fs::Permissions::from_mode(0o644)).unwrap();
    let user = Some(rustix::fs::Uid::from_raw(common::ORDINARY_USER));
    rustix::fs::chown(&temp, user, None).unwrap();
    let (outcome, _) =
        common::as_ordinary_user(|| resume_after_item_0_started(&resolved, "3", None));
    assert_eq!(outcome.failures.len(), 1);
    assert!(!temp.exists(), "the job's own leftover stayed");
    assert_eq!(fs::read(&target).unwrap(), b"a stranger's file");
}
