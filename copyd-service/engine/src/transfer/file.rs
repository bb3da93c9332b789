//! One file's copy: opening the source, creating (or, on resume, reopening)
//! the copy, its data, its metadata, and what the engines found unsupported
//! on the way.

use super::*;

impl Transfer<'_> {
    /// Copies one file to `copy`. On carrying on, a partial copy whose
    /// source is unchanged continues from its durable offset; anything else
    /// at `copy` is replaced.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy_file(
        &self,
        at: FileAt<'_>,
        entry: &Entry,
        sync: bool,
        index: usize,
        carry_on: bool,
    ) -> Result<()> {
        // A file that fails fails alone, and the tree goes on (on-error
        // continue), unless it is the job's own doing (cancel, stop) or the
        // destination's as a whole (full, read-only): then every next file
        // would fail the same way.
        self.copy_file_once(at, entry, sync, index, carry_on)
            .map_err(|mut err| {
                err.per_file |= !matches!(
                    err.kind,
                    ErrorKind::Cancelled | ErrorKind::NoSpace | ErrorKind::ReadOnly
                );
                err
            })
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_file_once(
        &self,
        at: FileAt<'_>,
        entry: &Entry,
        sync: bool,
        index: usize,
        carry_on: bool,
    ) -> Result<()> {
        let (source, copy) = (at.source, at.copy);
        let opening = CopyContext {
            progress: self.progress,
            control: self.control,
            source,
            observer: None,
        };
        let src = opening
            .retrying("open", None, || at.open_source())?
            .map_err(|err| EngineError::io("open", source, &err).of_one_source_file())?;
        // Durable offsets are tied to the source as the walk saw it, and
        // only ever to the very inode opened: an offset is recorded, or
        // carried on from, only once an fstat of the open file shows the
        // walk's identity (the path may have been swapped, or the file
        // changed, since). Most files never record an offset, so most are
        // copied without that fstat.
        let identity = FileIdentity::of(&entry.metadata);
        let opened = OpenedSource {
            file: &src,
            path: source,
            walked: identity,
            is_walked: std::sync::OnceLock::new(),
        };
        // A size that need not be the file's (0, as procfs says, or a page,
        // as sysfs says): the file is read to its end instead, by read and
        // write, since sparse detection and copy_file_range go by the size.
        let size_untrusted =
            entry.metadata.len() == 0 || self.known.sizes_untrusted(entry.metadata.dev(), &src);
        let resume_at = match carry_on && !size_untrusted {
            true => self
                .resume
                .offset(index, &entry.relative, identity)
                .filter(|_| opened.is_walked().unwrap_or(false)),
            false => None,
        };
        let dst = match resume_at {
            Some(offset) => {
                let dst = OpenOptions::new()
                    .write(true)
                    .open(copy)
                    .map_err(|err| EngineError::io("reopen", copy, &err))?;
                // Past the durable offset the bytes may be anything.
                dst.set_len(offset)
                    .map_err(|err| EngineError::io("truncate", copy, &err))?;
                dst
            }
            None => {
                if carry_on {
                    fsutil::remove_all(copy)?;
                }
                at.create_copy(&entry.metadata)
                    .map_err(|err| EngineError::io("create", copy, &err))?
            }
        };
        let len = entry.metadata.len();
        // The source's digest, from the bytes this copy reads; a resumed
        // copy's durable prefix is read once more for it first.
        let digest = SourceDigest::new(self.verify);
        let start = resume_at.unwrap_or(0).min(len);
        if let (Some(digest), true) = (&digest, start > 0) {
            verify::read_into(digest, &src, 0, start)
                .map_err(|err| EngineError::io("read", source, &err))?;
        }
        let ctx = CopyContext {
            progress: self.progress,
            control: self.control,
            source,
            observer: digest.as_ref().map(|d| d as &dyn ByteObserver),
        };
        let offsets = OffsetCommits {
            journal: self.journal,
            index,
            relative: &entry.relative,
            source: &opened,
            committed: Mutex::new((0, std::time::Instant::now())),
        };
        if start > 0 {
            self.progress.add_bytes_uncopied(start);
        }
        let mut cloned = false;
        let copied_len;
        if size_untrusted {
            let copied = engines::standard::copy_to_end(&src, &dst, 0, &ctx)?;
            copied_len = copied;
            self.progress.note_route(
                (entry.metadata.dev(), at.copy_device),
                [(EngineId::Standard.name(), copied)],
                [route::UNTRUSTED_SIZE],
            );
            // The walk counted `len` bytes for it: the totals grow by what
            // it had beyond, and what it did not have counts as done.
            match copied.checked_sub(len) {
                Some(more) => self.progress.add_totals(0, more),
                None => self.progress.add_bytes_uncopied(len - copied),
            }
        } else {
            if len > start {
                let file = FileFacts {
                    synced: sync || self.journal.is_kept(),
                    device: entry.metadata.dev(),
                    copy_device: at.copy_device,
                    // Fewer blocks than bytes: maybe holes (or inline data),
                    // so look for them; else the whole file is data (as cp
                    // judges).
                    maybe_sparse: maybe_sparse(&entry.metadata),
                };
                cloned = self.copy_data(&src, &dst, start, len, &ctx, &offsets, file)?;
            }
            if let (Some(digest), true) = (&digest, cloned) {
                // The clone shares the source's extents: the source is read
                // once, and its digest stands for both.
                verify::read_into(digest, &src, 0, len)
                    .map_err(|err| EngineError::io("read", source, &err))?;
            }
            // Data at the size means the size lied (a file system that
            // reports sizes wrong, or a file still growing): the rest goes
            // by read to end of file, as cp would have read it.
            let more = engines::standard::copy_to_end(&src, &dst, len, &ctx)?;
            if more > 0 {
                tracing::debug!(file = %source.display(), more, "more data than its size: read to its end");
                self.progress.add_totals(0, more);
            }
            copied_len = len + more;
        }
        let preserve = match (resume_at, at.dirs) {
            (None, Some(dirs)) => dirs.preserve_after_create(&entry.metadata),
            _ => self.preserve,
        };
        metadata::carry_file_metadata(Some(&src), &dst, copy, &entry.metadata, &preserve)?;
        self.check_copy(&dst, copied_len, digest, cloned, &at, entry, index)?;
        if sync {
            dst.sync_data()
                .map_err(|err| EngineError::io("sync", copy, &err))?;
        }
        Ok(())
    }

    /// Checks a copy of `len` bytes before it may get its final name, as the
    /// `verify` option asks: its size, or its digest read back from the
    /// storage against `digest`, the source's (a clone's digest, the
    /// source's read once, stands for both). Records the digest.
    #[allow(clippy::too_many_arguments)]
    fn check_copy(
        &self,
        dst: &File,
        len: u64,
        digest: Option<SourceDigest>,
        cloned: bool,
        at: &FileAt<'_>,
        entry: &Entry,
        index: usize,
    ) -> Result<()> {
        let mismatch = |what: String| {
            let mut err = EngineError::new(
                ErrorKind::ChecksumMismatch,
                format!(
                    "the copy of {} does not match it: {what}",
                    at.source.display()
                ),
            );
            err.per_file = true;
            err
        };
        if self.verify == Verify::Size {
            let size = dst
                .metadata()
                .map_err(|err| EngineError::io("inspect", at.copy, &err))?
                .len();
            if size != len {
                return Err(mismatch(format!("size {len}, copy {size}")));
            }
        }
        let Some(digest) = digest else {
            return Ok(());
        };
        let source = digest.finish(len);
        if !cloned {
            verify::drop_from_cache(dst)
                .map_err(|err| EngineError::io("write out", at.copy, &err))?;
            let began = std::time::Instant::now();
            let copy = verify::read_back(dst, len, self.verify)
                .map_err(|err| EngineError::io("read back", at.copy, &err))?;
            self.progress.add_read_back_time(began.elapsed());
            if copy != source {
                let method = self.verify.name();
                return Err(mismatch(format!(
                    "source {method} {source}, copy {method} {copy}"
                )));
            }
        }
        self.checksums.lock().unwrap().push(FileChecksum {
            index,
            relative: entry.copy_relative().to_path_buf(),
            digest: source,
            shared_extents: cloned,
        });
        Ok(())
    }
}

/// Whether a file may have holes worth looking for: fewer blocks than bytes
/// (or inline data); else the whole file is data, as cp judges.
pub(super) fn maybe_sparse(metadata: &fs::Metadata) -> bool {
    metadata.blocks() * 512 < metadata.len()
}

/// What `copy_data` needs to know of a file beyond its open descriptors.
#[derive(Clone, Copy)]
pub(super) struct FileFacts {
    /// Its copy will be synced to disk once complete.
    pub(super) synced: bool,
    /// The source's device (from the walk).
    pub(super) device: u64,
    /// The copy's device.
    pub(super) copy_device: u64,
    /// Whether the source may have holes worth looking for.
    pub(super) maybe_sparse: bool,
}

/// What the engines found unsupported in one transfer, by source device
/// (the copies' device is one for all: every item is built in the
/// destination's directory): "not supported here" belongs to the pair of
/// file systems, so a tree of many files, or many lone files, asks once
/// instead of once per file. Only a cost: a skipped engine would only have
/// said no again.
#[derive(Default)]
pub(super) struct KnownUnsupported {
    pub(super) by_device: std::sync::Mutex<std::collections::HashMap<u64, Skips>>,
    /// Whether the file system of a source device reports file sizes that
    /// are not their contents' (see `sizes_untrusted`), asked once each.
    pub(super) untrusted_sizes: std::sync::Mutex<std::collections::HashMap<u64, bool>>,
}

#[derive(Default, Clone, Copy)]
pub(super) struct Skips {
    /// Sharing extents failed as unsupported by the file systems.
    pub(super) no_clone: bool,
    /// The first this many byte movers could not copy here.
    pub(super) movers: usize,
}

impl KnownUnsupported {
    pub(super) fn get(&self, device: u64) -> Skips {
        self.by_device
            .lock()
            .unwrap()
            .get(&device)
            .copied()
            .unwrap_or_default()
    }

    pub(super) fn no_clone(&self, device: u64) {
        self.by_device
            .lock()
            .unwrap()
            .entry(device)
            .or_default()
            .no_clone = true;
    }

    /// Whether `file`, on `device`, is on a file system whose files' sizes
    /// say nothing of their contents: procfs and the like make a file's
    /// text when it is read and give sizes of 0 or of a page.
    pub(super) fn sizes_untrusted(&self, device: u64, file: &File) -> bool {
        let mut known = self.untrusted_sizes.lock().unwrap();
        *known.entry(device).or_insert_with(|| {
            rustix::fs::fstatfs(file)
                .is_ok_and(|fs| SYNTHETIC_FILE_SYSTEMS.contains(&(fs.f_type as u64)))
        })
    }

    pub(super) fn movers_skipped(&self, device: u64, skipped: usize) {
        if skipped == 0 {
            return;
        }
        let mut known = self.by_device.lock().unwrap();
        let skips = known.entry(device).or_default();
        skips.movers = skips.movers.max(skipped);
    }
}

/// The statfs magic numbers of file systems that make their files' contents
/// when read, with sizes unrelated to them: procfs, sysfs, debugfs, tracefs,
/// securityfs, configfs, cgroup and cgroup2.
pub(super) const SYNTHETIC_FILE_SYSTEMS: &[u64] = &[
    0x9fa0,
    0x6265_6572,
    0x6462_6720,
    0x7472_6163,
    0x7363_6673,
    0x6265_6570,
    0x0027_e0eb,
    0x6367_7270,
];

/// Whether a clone's "unsupported" speaks for the file systems rather than
/// this pair of files (btrfs says EINVAL to cloning between files of
/// different checksum settings, for one).
pub(super) fn is_unsupported_by_file_system(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::XDEV | Errno::OPNOTSUPP | Errno::NOSYS | Errno::NOTTY)
    )
}

/// An open source file and the identity the walk saw at its path.
pub(super) struct OpenedSource<'a> {
    pub(super) file: &'a File,
    pub(super) path: &'a Path,
    pub(super) walked: FileIdentity,
    /// Whether the open file is the walked one, unchanged (asked once).
    pub(super) is_walked: std::sync::OnceLock<bool>,
}

impl OpenedSource<'_> {
    pub(super) fn is_walked(&self) -> Result<bool> {
        if let Some(known) = self.is_walked.get() {
            return Ok(*known);
        }
        let metadata = self
            .file
            .metadata()
            .map_err(|err| EngineError::io("inspect", self.path, &err))?;
        let same = FileIdentity::of(&metadata) == self.walked;
        Ok(*self.is_walked.get_or_init(|| same))
    }
}

/// Advances a large file's durable offset now and then: an fdatasync, then
/// a journal report, at most every OFFSET_COMMIT_INTERVAL. A source that is
/// not the one walked (swapped or changed since) records no offset: a
/// resume copies it again from zero. Pieces copied by several streams at
/// once report here from each; commits are serialized, so the recorded
/// offset only grows.
pub(super) struct OffsetCommits<'a> {
    pub(super) journal: &'a dyn Journal,
    pub(super) index: usize,
    pub(super) relative: &'a Path,
    pub(super) source: &'a OpenedSource<'a>,
    /// The offset last recorded, and when.
    pub(super) committed: Mutex<(u64, std::time::Instant)>,
}

impl OffsetCommits<'_> {
    /// `offset`: everything before it has been copied (holes included).
    pub(super) fn maybe_commit(&self, dst: &File, offset: u64) -> Result<()> {
        if !self.journal.is_kept() {
            return Ok(());
        }
        let mut committed = self.committed.lock().unwrap();
        // Due once the next piece (at most SEGMENT, about PIECE_TIME) could
        // take the copy past OFFSET_COMMIT_BYTES or OFFSET_COMMIT_INTERVAL
        // since the last commit.
        let due = offset - committed.0.min(offset) > OFFSET_COMMIT_BYTES - SEGMENT
            || committed.1.elapsed() + 2 * PIECE_TIME >= OFFSET_COMMIT_INTERVAL;
        if offset <= committed.0 || !due || !self.source.is_walked()? {
            return Ok(());
        }
        dst.sync_data()
            .map_err(|err| EngineError::io("sync the copy of", self.source.path, &err))?;
        self.journal
            .file_offset(self.index, self.relative, self.source.walked, offset);
        *committed = (offset, std::time::Instant::now());
        Ok(())
    }
}

/// A file's digest as the transfer records it, before its item's target
/// names it (see `Outcome::checksums`).
pub(super) struct FileChecksum {
    pub(super) index: usize,
    pub(super) relative: PathBuf,
    pub(super) digest: String,
    pub(super) shared_extents: bool,
}
