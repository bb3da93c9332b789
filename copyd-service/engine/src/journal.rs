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
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// Item `index` is complete, durable and under its final name (for a
    /// move, its source is gone as well). Of a copy with `sync` off, only
    /// "complete and under its final name": it may not be on disk yet.
    fn item_done(&self, index: usize);
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
    fn item_done(&self, index: usize) {
        self.0.item_done(index)
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
    /// Per item, the files complete and durable in its temporary copy.
    pub durable_files: HashMap<usize, HashSet<PathBuf>>,
    /// Per (item, file), the durable prefix of a partial copy.
    pub offsets: HashMap<(usize, PathBuf), (FileIdentity, u64)>,
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

/// How often finished files are made durable as a group (one syncfs for all
/// of them) and reported: often enough that a crash loses little work,
/// rarely enough that small-file throughput stays that of a plain copy.
pub const GROUP_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a large file's durable prefix is advanced (one fdatasync).
pub const OFFSET_COMMIT_INTERVAL: Duration = Duration::from_secs(2);

/// Files of one item finished since the last group commit.
pub struct GroupCommit<'a> {
    index: usize,
    journal: &'a dyn Journal,
    state: Mutex<(Vec<PathBuf>, Instant)>,
}

impl<'a> GroupCommit<'a> {
    pub fn new(index: usize, journal: &'a dyn Journal) -> Self {
        GroupCommit {
            index,
            journal,
            state: Mutex::new((Vec::new(), Instant::now())),
        }
    }

    /// Notes a finished file; once the interval has passed, syncs the file
    /// system with `sync` and reports every file noted so far.
    ///
    /// The sync runs outside the lock: the other workers go on finishing
    /// (and noting) files meanwhile, into the next group. Every file of a
    /// group was finished before its sync began, so the report stays true.
    pub fn finished(
        &self,
        relative: PathBuf,
        sync: impl FnOnce() -> crate::error::Result<()>,
    ) -> crate::error::Result<()> {
        let group = {
            let mut state = self.state.lock().unwrap();
            state.0.push(relative);
            if state.1.elapsed() < GROUP_COMMIT_INTERVAL {
                return Ok(());
            }
            state.1 = Instant::now();
            std::mem::take(&mut state.0)
        };
        if let Err(err) = sync() {
            // Not durable after all: back into the next group (the transfer
            // fails on this error anyway).
            self.state.lock().unwrap().0.extend(group);
            return Err(err);
        }
        self.journal.files_durable(self.index, &group);
        Ok(())
    }
}
