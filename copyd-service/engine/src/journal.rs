//! What a transfer reports so that an interrupted job can be carried on, and
//! what an earlier, interrupted run of the same job left behind.
//!
//! The contract: everything reported here is durable on disk at the moment
//! it is reported. A job that resumes from these reports produces the same
//! bytes as one that never stopped.

use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};

/// Who a source file was when its copy began: if any of this changes, the
/// copy of it restarts from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileIdentity {
    pub fn of(metadata: &Metadata) -> Self {
        FileIdentity {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.len(),
            mtime_ns: metadata.mtime() as i128 * 1_000_000_000 + metadata.mtime_nsec() as i128,
        }
    }
}

/// Which inode a finished copy is: recorded durably before the copy is
/// renamed into place, so that recovery can tell copyd's own copy at a
/// target from anything someone else put there meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CopyIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl CopyIdentity {
    pub fn of(metadata: &Metadata) -> Self {
        CopyIdentity {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

/// Receives the durable progress of a transfer. All methods are called only
/// after what they describe is on disk.
pub trait Journal: Sync {
    /// Whether reports are kept at all; when not, the transfer skips the
    /// syncs that exist only to make reports true.
    fn is_kept(&self) -> bool {
        true
    }
    /// Item `index` is about to be built under its temporary name.
    fn item_started(&self, index: usize);
    /// Items `indices` are about to be built, one after the other, and
    /// placed together: reported at once, so that one flush makes them all
    /// durable.
    fn items_started(&self, indices: &[usize]) {
        for &index in indices {
            self.item_started(index);
        }
    }
    /// Item `index` is complete (and with sync durable) under its temporary
    /// name, which is the inode `copy`, and is about to be renamed into
    /// place; for a move by rename, `copy` is the source about to be
    /// renamed. Durable before the rename (with sync): recovery counts an
    /// item as placed only when its target is this inode.
    fn item_built(&self, index: usize, copy: CopyIdentity) {
        self.items_built(&[(index, copy)]);
    }
    /// Several items built, reported at once: one flush for them all.
    fn items_built(&self, built: &[(usize, CopyIdentity)]);
    /// Item `index` is complete, durable and under its final name (for a
    /// move, its source is gone as well). Of a copy with `sync` off, only
    /// "complete and under its final name": it may not be on disk yet.
    fn item_done(&self, index: usize);
    /// Several items done, reported at once.
    fn items_done(&self, indices: &[usize]) {
        for &index in indices {
            self.item_done(index);
        }
    }
    /// These files of item `index` (paths relative to the item, "" for a
    /// lone file) are complete and durable in its temporary copy.
    fn files_durable(&self, index: usize, relatives: &[PathBuf]);
    /// The first `offset` bytes of file `relative` of item `index` are
    /// durable in its temporary copy, copied from the source `identity`.
    fn file_offset(&self, index: usize, relative: &Path, identity: FileIdentity, offset: u64);
}

/// For transfers nobody will resume.
pub struct NoJournal;

impl Journal for NoJournal {
    fn is_kept(&self) -> bool {
        false
    }
    fn item_started(&self, _: usize) {}
    fn items_built(&self, _: &[(usize, CopyIdentity)]) {}
    fn item_done(&self, _: usize) {}
    fn files_durable(&self, _: usize, _: &[PathBuf]) {}
    fn file_offset(&self, _: usize, _: &Path, _: FileIdentity, _: u64) {}
}

/// For a transfer that does not sync (`sync` off): items starting and
/// finishing are passed on, so a resume knows which items are done and
/// which temporaries are its own; nothing inside an item is durable, so no
/// file or offset is ever reported, and an item in flight restarts whole.
pub(crate) struct ItemsOnly<'a>(pub &'a dyn Journal);

impl Journal for ItemsOnly<'_> {
    fn is_kept(&self) -> bool {
        false
    }
    fn item_started(&self, index: usize) {
        self.0.item_started(index)
    }
    fn items_started(&self, indices: &[usize]) {
        self.0.items_started(indices)
    }
    fn items_built(&self, built: &[(usize, CopyIdentity)]) {
        self.0.items_built(built)
    }
    fn item_done(&self, index: usize) {
        self.0.item_done(index)
    }
    fn items_done(&self, indices: &[usize]) {
        self.0.items_done(indices)
    }
    fn files_durable(&self, _: usize, _: &[PathBuf]) {}
    fn file_offset(&self, _: usize, _: &Path, _: FileIdentity, _: u64) {}
}

/// What an earlier run of this job made durable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResumeState {
    /// True when this run carries on an earlier one.
    pub resuming: bool,
    /// Items whose building had started.
    pub started: HashSet<usize>,
    /// Items built whole, with the inode each was (or, for a move by
    /// rename, the source's) just before its rename into place.
    pub built: HashMap<usize, CopyIdentity>,
    /// Per item, the files complete and durable in its temporary copy.
    pub durable_files: HashMap<usize, HashSet<PathBuf>>,
    /// Per (item, file), the durable prefix of a partial copy.
    pub offsets: HashMap<(usize, PathBuf), (FileIdentity, u64)>,
    /// Items an earlier run put in place (skipped now). With preserve
    /// links, a later item's name of a file one of them copied is linked to
    /// that copy, as in an uninterrupted run.
    pub placed: HashSet<usize>,
}

impl ResumeState {
    pub fn is_durable(&self, index: usize, relative: &Path) -> bool {
        self.durable_files
            .get(&index)
            .is_some_and(|files| files.contains(relative))
    }

    /// The durable prefix of a partial copy, if its source is still the same.
    pub fn offset(&self, index: usize, relative: &Path, identity: FileIdentity) -> Option<u64> {
        match self.offsets.get(&(index, relative.to_path_buf())) {
            Some((recorded, offset)) if *recorded == identity => Some(*offset),
            _ => None,
        }
    }
}

/// How often a group of small lone files (`copy f1 … f500 dir/`) is
/// placed, made durable with one syncfs and reported: often enough that a
/// crash loses little work, rarely enough that their throughput stays that
/// of a plain copy. (A tree's files are committed by its own committer,
/// every GROUP_COMMIT_GATHER.)
pub const GROUP_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a large file's durable prefix is advanced (one fdatasync).
pub const OFFSET_COMMIT_INTERVAL: Duration = Duration::from_secs(2);

/// How long the committer lets a tree's finished files gather before it
/// syncs them as a group: each syncfs also flushes the device's cache, so
/// not one per file, but often enough that the disk writes while the
/// workers copy.
pub const GROUP_COMMIT_GATHER: Duration = Duration::from_millis(100);

/// A tree's finished files, made durable as they come by a committer thread
/// beside the workers ([`GroupCommit::commit_until_stopped`]): one syncfs
/// per group, then one report of the group. The workers only note files
/// and never wait for the disk; and since the disk writes while they copy,
/// the syncfs that ends the tree finds little left to write (see
/// docs/PERFORMANCE.md, "Group commits beside the workers").
pub struct GroupCommit<'a> {
    index: usize,
    journal: &'a dyn Journal,
    state: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    files: Vec<PathBuf>,
    /// The committer waits for a file (and only then needs waking: a wake
    /// is a system call, and files are noted by the ten thousand).
    idle: bool,
    stopped: bool,
    failed: Option<EngineError>,
}

impl<'a> GroupCommit<'a> {
    pub fn new(index: usize, journal: &'a dyn Journal) -> Self {
        GroupCommit {
            index,
            journal,
            state: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        }
    }

    /// Notes a finished file for the next group; fails once a group's sync
    /// has failed (the transfer ends on that error).
    pub fn finished(&self, relative: PathBuf) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        if let Some(err) = &state.failed {
            return Err(err.clone());
        }
        state.files.push(relative);
        if state.idle {
            state.idle = false;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Runs `work` with the committer beside it on a thread of its own
    /// (which, started from the job's thread, has its credentials), syncing
    /// groups with `sync`; then stops the committer (also when `work`
    /// panics) and returns `work`'s error, or else a group sync's.
    pub fn commit_beside<T>(
        &self,
        sync: impl Fn() -> Result<()> + Sync,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        struct StopOnDrop<'g, 'a>(&'g GroupCommit<'a>);
        impl Drop for StopOnDrop<'_, '_> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        let done = std::thread::scope(|scope| {
            scope.spawn(|| self.commit_until_stopped(&sync));
            let _stop = StopOnDrop(self);
            work()
        })?;
        self.failure()?;
        Ok(done)
    }

    /// The committer's loop, until [`Self::stop`]: waits for finished
    /// files, lets more gather for GROUP_COMMIT_GATHER, syncs them with
    /// `sync` and reports them. Every file of a group was finished before
    /// its sync began, so the report is true. Files noted but not yet
    /// synced when it stops are not reported (the item's own end makes them
    /// durable). A failed sync stops it; `finished` then returns the error.
    fn commit_until_stopped(&self, sync: impl Fn() -> Result<()>) {
        loop {
            let group = {
                let mut state = self.state.lock().unwrap();
                while state.files.is_empty() && !state.stopped {
                    state.idle = true;
                    state = self.wake.wait(state).unwrap();
                }
                let gathered = Instant::now() + GROUP_COMMIT_GATHER;
                while !state.stopped {
                    let left = gathered.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    state = self.wake.wait_timeout(state, left).unwrap().0;
                }
                if state.stopped {
                    return;
                }
                std::mem::take(&mut state.files)
            };
            if let Err(err) = sync() {
                self.state.lock().unwrap().failed = Some(err);
                return;
            }
            self.journal.files_durable(self.index, &group);
        }
    }

    /// Ends the committer's loop (at once, or after the sync it is in).
    fn stop(&self) {
        self.state.lock().unwrap().stopped = true;
        self.wake.notify_all();
    }

    /// The error of a failed group sync, if one failed: asked once the
    /// committer has ended.
    fn failure(&self) -> Result<()> {
        match &self.state.lock().unwrap().failed {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Keeps the reports of durable files.
    #[derive(Default)]
    struct Reports(Mutex<Vec<Vec<PathBuf>>>);

    impl Journal for Reports {
        fn item_started(&self, _: usize) {}
        fn items_built(&self, _: &[(usize, CopyIdentity)]) {}
        fn item_done(&self, _: usize) {}
        fn files_durable(&self, _: usize, relatives: &[PathBuf]) {
            self.0.lock().unwrap().push(relatives.to_vec());
        }
        fn file_offset(&self, _: usize, _: &Path, _: FileIdentity, _: u64) {}
    }

    /// Files noted while the work runs are synced and reported in groups by
    /// the committer, each after a sync that began after it was noted.
    #[test]
    fn finished_files_are_reported_after_a_sync_beside_the_work() {
        let reports = Reports::default();
        let (noted, synced) = (AtomicUsize::new(0), Mutex::new(Vec::new()));
        let group = GroupCommit::new(0, &reports);
        group
            .commit_beside(
                || {
                    synced.lock().unwrap().push(noted.load(Ordering::SeqCst));
                    Ok(())
                },
                || {
                    for n in 0..6 {
                        group.finished(PathBuf::from(format!("f{n}")))?;
                        noted.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(GROUP_COMMIT_GATHER);
                    }
                    // The last files get their group synced before the end.
                    std::thread::sleep(GROUP_COMMIT_GATHER * 3);
                    Ok(())
                },
            )
            .unwrap();
        let reports = reports.0.into_inner().unwrap();
        let all: Vec<_> = reports.iter().flatten().cloned().collect();
        let expected: Vec<_> = (0..6).map(|n| PathBuf::from(format!("f{n}"))).collect();
        assert_eq!(all, expected, "every file once, in order");
        assert!(reports.len() >= 2, "in more than one group: {reports:?}");
        // Each group's sync saw all of its files noted.
        let synced = synced.into_inner().unwrap();
        let mut reported = 0;
        for (group, noted_at_sync) in reports.iter().zip(&synced) {
            reported += group.len();
            assert!(*noted_at_sync >= reported, "{synced:?} {reports:?}");
        }
    }

    /// A failed group sync ends the work: the next file noted gets its
    /// error, and so does the whole, even if the work ignored it.
    #[test]
    fn a_failed_group_sync_fails_the_work() {
        let reports = Reports::default();
        let group = GroupCommit::new(0, &reports);
        let fail = || Err(EngineError::new(ErrorKind::Failed, "no disk"));
        let err = group
            .commit_beside(fail, || {
                group.finished(PathBuf::from("a"))?;
                std::thread::sleep(GROUP_COMMIT_GATHER * 4);
                group.finished(PathBuf::from("b"))
            })
            .unwrap_err();
        assert_eq!(err.message, "no disk");
        let group = GroupCommit::new(0, &reports);
        let err = group
            .commit_beside(fail, || {
                let _ = group.finished(PathBuf::from("a"));
                std::thread::sleep(GROUP_COMMIT_GATHER * 4);
                Ok(())
            })
            .unwrap_err();
        assert_eq!(err.message, "no disk");
        assert!(reports.0.lock().unwrap().is_empty());
    }
}
