//! Small lone files (`copy a b c … dir/`) go as groups, built on the
//! workers, and with sync sharing their flushes: all their Started reports
//! first, then the copies, one syncfs, the renames. These tests hold a group to what each file
//! alone would give: identical copies, every placed file reported done,
//! and on an error, the files before it placed and nothing of the rest
//! left behind (no temporary, no partial target).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::Recorder;
use copyd_engine::fsutil::is_temp_name;
use copyd_engine::{
    resolve, run_resumable, Control, EngineError, EngineSet, ErrorKind, Operation, Options,
    Outcome, Progress, Request, Resolved, ResumeState,
};

const FILES: usize = 10;

/// `FILES` small files (1–40 KiB) under `dir/src`, each its own pattern,
/// and an empty directory `dir/dst` to copy them into.
fn sources_and_dst(dir: &Path) -> (Vec<PathBuf>, PathBuf) {
    let src = dir.join("src");
    fs::create_dir(&src).unwrap();
    let sources = (0..FILES)
        .map(|i| {
            let path = src.join(format!("f{i}"));
            common::write_file(&path, 1024 + i * 4096, i as u64);
            path
        })
        .collect();
    let dst = dir.join("dst");
    fs::create_dir(&dst).unwrap();
    (sources, dst)
}

fn resolved(operation: Operation, sources: &[PathBuf], destination: &Path, rate: u64) -> Resolved {
    resolved_with(operation, sources, destination, rate, true)
}

fn resolved_with(
    operation: Operation,
    sources: &[PathBuf],
    destination: &Path,
    rate: u64,
    sync: bool,
) -> Resolved {
    resolve(Request {
        operation,
        sources: sources.to_vec(),
        destination: destination.to_path_buf(),
        options: Options {
            rate_limit: rate,
            sync,
            ..Options::default()
        },
    })
    .unwrap()
}

fn run_with(resolved: &Resolved, control: &Control) -> (Result<Outcome, EngineError>, Vec<String>) {
    let journal = Recorder::default();
    let result = run_resumable(
        resolved,
        &EngineSet::probe(),
        "31",
        &Progress::new(),
        control,
        &ResumeState::default(),
        &journal,
    );
    (result, journal.events())
}

/// `FILES` sources under `dir`, and their copy into `dir/dst` throttled to
/// about 4 s (the last file would start after about 3 s).
fn slow_copy(dir: &Path) -> (Vec<PathBuf>, PathBuf, Resolved) {
    let (sources, dst) = sources_and_dst(dir);
    let bytes: u64 = sources.iter().map(|s| fs::metadata(s).unwrap().len()).sum();
    let resolved = resolved(Operation::Copy, &sources, &dst, bytes / 4);
    (sources, dst, resolved)
}

/// Does `act` on a thread of its own after `ms` milliseconds.
fn after(ms: u64, act: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        act();
    })
}

fn temporaries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| is_temp_name(name))
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

/// The items reported done, in report order.
fn done(events: &[String]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|event| event.strip_prefix("done "))
        .map(|index| index.parse().unwrap())
        .collect()
}

/// With sync and without: grouped either way (for the workers), and with
/// sync also sharing the flushes.
#[test]
fn lone_files_are_reported_started_together_and_all_arrive() {
    for sync in [true, false] {
        lone_files_arrive(sync);
    }
}

fn lone_files_arrive(sync: bool) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (sources, dst) = sources_and_dst(dir.path());
    let resolved = resolved_with(Operation::Copy, &sources, &dst, 0, sync);
    let (result, events) = run_with(&resolved, &Control::default());
    assert_eq!(result.unwrap().copied, FILES);
    // One group: every file reported started (one flush) before any is
    // built, and built (one flush) before any is placed. One at a time,
    // "started i", "built i" and "done i" would alternate.
    let first_built = events.iter().position(|e| e.starts_with("built")).unwrap();
    let first_done = events.iter().position(|e| e.starts_with("done")).unwrap();
    let started: Vec<String> = (0..FILES).map(|i| format!("started {i}")).collect();
    let built: Vec<String> = (0..FILES).map(|i| format!("built {i}")).collect();
    assert_eq!(events[..first_built], started[..], "{events:?}");
    assert_eq!(events[first_built..first_done], built[..], "{events:?}");
    assert_eq!(done(&events), (0..FILES).collect::<Vec<_>>());
    for source in &sources {
        let copy = dst.join(source.file_name().unwrap());
        assert_eq!(fs::read(source).unwrap(), fs::read(copy).unwrap());
    }
    assert_eq!(temporaries(&dst), Vec::<String>::new());
}

/// A target someone else made after the job was checked is not copyd's
/// copy: with on-conflict fail, that item alone fails (listed, its target
/// untouched) and the rest of the group is placed.
#[test]
fn a_target_that_appeared_fails_alone_and_is_left_untouched() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (sources, dst) = sources_and_dst(dir.path());
    let resolved = resolved(Operation::Copy, &sources, &dst, 0);
    fs::write(dst.join("f4"), b"not ours").unwrap();
    let (result, events) = run_with(&resolved, &Control::default());
    let outcome = result.unwrap();
    assert_eq!(outcome.copied, FILES - 1);
    let failed: Vec<_> = outcome
        .failures
        .iter()
        .map(|failure| (failure.source.clone(), failure.error.kind))
        .collect();
    assert_eq!(failed, [(sources[4].clone(), ErrorKind::AlreadyExists)]);
    assert_eq!(fs::read(dst.join("f4")).unwrap(), b"not ours");
    let placed: Vec<usize> = (0..FILES).filter(|&i| i != 4).collect();
    assert_eq!(done(&events), placed);
    for (i, source) in sources.iter().enumerate() {
        if i != 4 {
            let copy = dst.join(source.file_name().unwrap());
            assert_eq!(fs::read(source).unwrap(), fs::read(copy).unwrap());
        }
    }
    assert_eq!(temporaries(&dst), Vec::<String>::new());
}

/// A source that vanishes while the group runs (after the walk, which
/// would have refused it) fails alone (on-error continue, the default): the
/// others are placed, and it is listed with why.
#[test]
fn a_source_that_vanished_fails_alone_and_the_group_goes_on() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (sources, dst, resolved) = slow_copy(dir.path());
    let last = sources[FILES - 1].clone();
    let remover = after(300, move || fs::remove_file(last).unwrap());
    let (result, events) = run_with(&resolved, &Control::default());
    remover.join().unwrap();
    let outcome = result.unwrap();
    assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
    assert_eq!(outcome.failures[0].source, sources[FILES - 1]);
    assert_eq!(
        outcome.failures[0].target,
        dst.join(format!("f{}", FILES - 1))
    );
    assert_eq!(outcome.failures[0].error.kind, ErrorKind::NotFound);
    assert_eq!(done(&events), (0..FILES - 1).collect::<Vec<_>>());
    for source in &sources[..FILES - 1] {
        let copy = dst.join(source.file_name().unwrap());
        assert_eq!(fs::read(source).unwrap(), fs::read(copy).unwrap());
    }
    assert!(!dst.join(format!("f{}", FILES - 1)).exists());
    assert_eq!(temporaries(&dst), Vec::<String>::new());
}

/// With on-error stop, the same vanished source stops the group there,
/// keeping the files placed before it.
#[test]
fn with_on_error_stop_a_group_stops_at_a_source_that_vanished() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (sources, dst, mut resolved) = slow_copy(dir.path());
    resolved.request.options.on_error = copyd_engine::OnError::Stop;
    let last = sources[FILES - 1].clone();
    let remover = after(300, move || fs::remove_file(last).unwrap());
    let (result, events) = run_with(&resolved, &Control::default());
    remover.join().unwrap();
    assert_eq!(result.unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(done(&events), (0..FILES - 1).collect::<Vec<_>>());
    for source in &sources[..FILES - 1] {
        let copy = dst.join(source.file_name().unwrap());
        assert_eq!(fs::read(source).unwrap(), fs::read(copy).unwrap());
    }
    assert!(!dst.join(format!("f{}", FILES - 1)).exists());
    assert_eq!(temporaries(&dst), Vec::<String>::new());
}

/// A group is placed at least every second, so a slow group (here
/// throttled to about 4 s) does not hold all its copies back; cancelled
/// midway, the files placed stay, whole, and nothing else is left.
#[test]
fn a_slow_group_places_as_it_goes_and_a_cancel_leaves_only_whole_files() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (sources, dst, resolved) = slow_copy(dir.path());
    let control = Arc::new(Control::default());
    let canceller = {
        let control = Arc::clone(&control);
        after(2500, move || {
            control.cancel();
        })
    };
    let (result, events) = run_with(&resolved, &control);
    canceller.join().unwrap();
    assert_eq!(result.unwrap_err().kind, ErrorKind::Cancelled);
    let placed = done(&events);
    // At 1 s and 2 s of copying, what was built was placed.
    assert!(
        placed.len() >= 2,
        "nothing placed before the cancel: {events:?}"
    );
    assert!(
        placed.len() < FILES,
        "the copy outran the cancel: {events:?}"
    );
    for (i, source) in sources.iter().enumerate() {
        let copy = dst.join(source.file_name().unwrap());
        if placed.contains(&i) {
            assert_eq!(fs::read(source).unwrap(), fs::read(copy).unwrap());
        } else {
            assert!(
                !copy.exists(),
                "{} is there but not reported",
                copy.display()
            );
        }
    }
    assert_eq!(temporaries(&dst), Vec::<String>::new());
}

/// Moved to another file system, a group's sources are deleted only after
/// their copies are placed, and all of them are.
#[test]
fn a_group_moved_across_file_systems_leaves_its_copies_and_no_sources() {
    let Some(mount) = common::ScratchMount::small_tmpfs(4096) else {
        return;
    };
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (sources, _) = sources_and_dst(dir.path());
    let contents: Vec<Vec<u8>> = sources.iter().map(|s| fs::read(s).unwrap()).collect();
    let (result, events) = run_with(
        &resolved(Operation::Move, &sources, &mount.path, 0),
        &Control::default(),
    );
    let outcome = result.unwrap();
    assert_eq!((outcome.copied, outcome.renamed), (FILES, 0));
    assert_eq!(done(&events), (0..FILES).collect::<Vec<_>>());
    for (source, content) in sources.iter().zip(&contents) {
        assert!(!source.exists(), "{} was not deleted", source.display());
        assert_eq!(
            &fs::read(mount.path.join(source.file_name().unwrap())).unwrap(),
            content
        );
    }
    assert_eq!(temporaries(&mount.path), Vec::<String>::new());
}
