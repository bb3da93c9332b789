//! A large file's durable offset advances on time as well as on bytes: at
//! most about OFFSET_COMMIT_INTERVAL (2 s) or 64 MiB apart, whichever comes
//! first, so a slow or rate-limited copy loses at most a few seconds.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use copyd_engine::{
    resolve, run_resumable, Control, EngineSet, FileIdentity, Journal, Operation, Options,
    Progress, Request, ResumeState,
};

/// Records each offset reported, and when.
struct Timed {
    offsets: Mutex<Vec<(Instant, u64)>>,
}

impl Journal for Timed {
    fn item_started(&self, _: usize) {}
    fn items_built(&self, _: &[(usize, copyd_engine::CopyIdentity)]) {}
    fn item_done(&self, _: usize) {}
    fn files_durable(&self, _: usize, _: &[PathBuf]) {}
    fn file_offset(&self, _: usize, _: &Path, _: FileIdentity, offset: u64) {
        self.offsets.lock().unwrap().push((Instant::now(), offset));
    }
}

/// Copies a `len`-byte file with `engine` at `rate` bytes/s (0: no limit);
/// returns when it began, when it ended and the offsets reported.
fn timed_copy(engine: &str, len: usize, rate: u64) -> (Instant, Instant, Vec<(Instant, u64)>) {
    timed_copy_of(engine, len, rate, false)
}

/// As [`timed_copy`]; with `uncached`, the source's pages are dropped
/// first, so a large file is read by several streams at once.
fn timed_copy_of(
    engine: &str,
    len: usize,
    rate: u64,
    uncached: bool,
) -> (Instant, Instant, Vec<(Instant, u64)>) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("big");
    common::write_file(&source, len, 5);
    if uncached {
        let file = std::fs::File::open(&source).unwrap();
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    }
    let resolved = resolve(Request {
        operation: Operation::Copy,
        sources: vec![source],
        destination: dir.path().join("copy"),
        options: Options {
            engine: engine.into(),
            rate_limit: rate,
            ..Options::default()
        },
    })
    .unwrap();
    let journal = Timed {
        offsets: Mutex::new(Vec::new()),
    };
    let (progress, control) = (Progress::new(), Control::default());
    let began = Instant::now();
    run_resumable(
        &resolved,
        &EngineSet::probe(),
        "test",
        &progress,
        &control,
        &ResumeState::default(),
        &journal,
    )
    .unwrap();
    let ended = Instant::now();
    (began, ended, journal.offsets.into_inner().unwrap())
}

/// Leeway over 2 s for the scheduler and the fdatasync itself.
const AT_MOST: Duration = Duration::from_millis(2_400);

/// Every gap between offsets, and after the last, is at most AT_MOST.
fn assert_paced(engine: &str, began: Instant, ended: Instant, offsets: &[(Instant, u64)]) {
    assert!(offsets.len() >= 2, "{engine}: {offsets:?}");
    let mut last = (began, 0);
    for &(when, offset) in offsets {
        assert!(offset > last.1, "{engine}: offsets must grow: {offsets:?}");
        let gap = when - last.0;
        assert!(
            gap <= AT_MOST,
            "{engine}: {gap:?} without an offset (at {offset})"
        );
        last = (when, offset);
    }
    let gap = ended - last.0;
    assert!(
        gap <= AT_MOST,
        "{engine}: the last offset {gap:?} before the end"
    );
}

/// An uncached file is copied by several streams, piece by piece; each
/// stream copies its piece in parts, so the offset still advances every
/// 2 s (before, only when a whole 32 MiB piece was done: 8 s here).
#[test]
fn a_file_copied_in_streams_advances_its_offset_every_two_seconds() {
    let (began, ended, offsets) = timed_copy_of("standard", 48 << 20, 8_000_000, true);
    assert_paced("streams", began, ended, &offsets);
}

#[test]
fn a_rate_limited_copy_advances_its_offset_every_two_seconds() {
    // 5 MB/s, 24 MiB: about 5 s. (The copy: 23 MB in 4.5 s, no offset.)
    for engine in ["auto", "standard", "splice"] {
        let (began, ended, offsets) = timed_copy(engine, 24 << 20, 5_000_000);
        assert_paced(engine, began, ended, &offsets);
    }
}

#[test]
fn a_fast_copy_advances_its_offset_every_64_mib() {
    let len = 200 << 20;
    for engine in ["auto", "standard"] {
        let (_, _, offsets) = timed_copy(engine, len, 0);
        let mut last = 0;
        for &(_, offset) in offsets.iter().chain([&(Instant::now(), len as u64)]) {
            assert!(
                offset - last <= 64 << 20,
                "{engine}: {} bytes without an offset: {offsets:?}",
                offset - last
            );
            last = offset;
        }
    }
}
