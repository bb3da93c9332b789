//! Carrying out a resolved request: renames for moves that can, copies built
//! under temporary names for everything else, and deletion of moved sources
//! only once their copies are durable.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustix::io::Errno;

use crate::anchored::AnchoredDir;
use crate::conflict::ConflictDecision;
use crate::engines::io_uring::{BatchRings, SmallFile, SmallFileResult, BATCH_FILE_MAX};
use crate::engines::{try_chain, CopyContext, EngineId, EngineSet, FileCopier};
use crate::error::{EngineError, Result};
use crate::fsutil::{open_nofollow, open_source_at, under};
use crate::journal::{
    CopyIdentity, FileIdentity, GroupCommit, ItemsOnly, Journal, NoJournal, ResumeState,
    GROUP_COMMIT_INTERVAL, OFFSET_COMMIT_INTERVAL,
};
use crate::progress::{Control, Progress};
use crate::request::{Conflict, Item, Operation, Preserve, Resolved};
use crate::walk::{self, Entry, EntryKind, Tree};
use crate::{
    engines, fsutil, links, metadata, names, parallel, provenance, read_ahead, residency, sparse,
};

mod merge;

/// What a finished transfer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Items copied (or, for moves across file systems, copied then deleted).
    pub copied: usize,
    /// Items moved by a rename.
    pub renamed: usize,
    /// Items left alone because their target existed (on-conflict skip).
    pub skipped: usize,
    /// Source files that could not be copied (vanished, unreadable) while
    /// the rest went on. A moved item with any of these keeps its source.
    pub failures: Vec<(std::path::PathBuf, EngineError)>,
}

/// Everything the steps of one transfer share.
struct Transfer<'a> {
    chain: Vec<&'a dyn FileCopier>,
    /// The engines of `chain` that share extents (reflink), and the ones
    /// that move bytes, in chain order: split once, not for every file.
    cloners: Vec<&'a dyn FileCopier>,
    movers: Vec<&'a dyn FileCopier>,
    preserve: Preserve,
    sparse: bool,
    /// Make each item durable before its rename, and the rename after.
    sync: bool,
    /// The engine option is `auto`: the transfer picks how bytes move.
    auto: bool,
    /// Threads for a tree's files (0: one per CPU).
    workers: usize,
    /// A rename rule changes names inside trees.
    renames_inside: bool,
    tag: &'a str,
    progress: &'a Progress,
    control: &'a Control,
    operation: Operation,
    resume: &'a ResumeState,
    journal: &'a dyn Journal,
    failures: std::sync::Mutex<Vec<(std::path::PathBuf, EngineError)>>,
    known: KnownUnsupported,
    /// With preserve links: copies in place of files with other names, for
    /// the later items' names of the same files.
    placed: links::PlacedCopies,
}

/// The most of a large file copied between chances to advance its durable
/// offset.
const SEGMENT: u64 = 32 << 20;

/// At most how many bytes of a file are copied between two advances of its
/// durable offset (besides OFFSET_COMMIT_INTERVAL): a commit is made once
/// the next piece could go past it.
const OFFSET_COMMIT_BYTES: u64 = 64 << 20;

/// About how long one piece of a file takes, so that a slow or rate-limited
/// copy still comes by a chance to commit its offset on time: pieces are
/// cut to this much of the rate measured so far.
const PIECE_TIME: std::time::Duration = std::time::Duration::from_millis(250);

/// The smallest and the first piece of a paced copy (see `Pace`).
const MIN_PIECE: u64 = 64 << 10;
const FIRST_PIECE: u64 = 1 << 20;

/// What [`read_ahead`] is given as one piece: its unit of reading.
const READ_AHEAD_PART: u64 = 1 << 20;

/// Files of this size or more are copied first, largest first, one per
/// worker at a time.
const LARGE_FILE: u64 = 1 << 20;

/// Files with at most this many bytes to copy go by read and write when
/// copy_file_range cannot take them.
const SMALL_DATA: u64 = 64 << 10;

/// How much data a file must have for [`read_ahead`] to pay (below, a
/// thread costs more than the overlap saves), and how much it may have
/// (above, measured slower here: see `read_ahead`).
const READ_AHEAD_BYTES: std::ops::RangeInclusive<u64> = (8 << 20)..=(256 << 20);

/// At most how many streams copy one large file's pieces at once (when its
/// bytes must come from the device).
const MAX_STREAMS: usize = 4;

/// At most how many small lone files, and how many of their bytes, are
/// copied as one group (see `copy_lone_files`).
const LONE_FILE_GROUP: usize = 256;
const LONE_FILE_GROUP_BYTES: u64 = 32 << 20;

/// How many of a tree's small files are looked at to tell whether its
/// bytes are cached, and at most how many workers copy them when not (see
/// `file_workers`).
const COLD_SAMPLES: usize = 8;
const MAX_COLD_WORKERS: usize = 16;

/// At most how many small files of one directory a worker takes at once.
const SMALL_FILE_RUN: usize = 1024;

/// Runs `resolved` to the end. `tag` makes the temporary names unique to this
/// job. On error or cancel, nothing partial is left under a final name and no
/// temporary file is left behind; items finished before stay finished.
pub fn run(
    resolved: &Resolved,
    engines: &EngineSet,
    tag: &str,
    progress: &Progress,
    control: &Control,
) -> Result<Outcome> {
    run_resumable(
        resolved,
        engines,
        tag,
        progress,
        control,
        &ResumeState::default(),
        &NoJournal,
    )
}

/// Like [`run`], reporting durable progress to `journal` and carrying on
/// from what an earlier run of the same job (same `tag`) left in `resume`.
pub fn run_resumable(
    resolved: &Resolved,
    engines: &EngineSet,
    tag: &str,
    progress: &Progress,
    control: &Control,
    resume: &ResumeState,
    journal: &dyn Journal,
) -> Result<Outcome> {
    let options = &resolved.request.options;
    options.check_for(resolved.request.operation)?;
    // Without syncs nothing inside an item is durable: no file or offset
    // may be reported (and no sync is made to report one).
    let items_only = ItemsOnly(journal);
    let journal: &dyn Journal = if options.sync { journal } else { &items_only };
    let chain = engines.select(&options.engine)?;
    let (cloners, movers) = chain
        .iter()
        .partition(|engine| engine.id().capabilities().shares_extents);
    let transfer = Transfer {
        chain,
        cloners,
        movers,
        preserve: options.preserve,
        sparse: options.sparse,
        sync: options.sync,
        auto: options.engine == "auto",
        workers: options.workers,
        renames_inside: options.rename.is_some(),
        tag,
        progress,
        control,
        operation: resolved.request.operation,
        resume,
        journal,
        failures: std::sync::Mutex::new(Vec::new()),
        known: KnownUnsupported::default(),
        placed: links::PlacedCopies::default(),
    };
    control.set_rate_limit(options.rate_limit);
    control.checkpoint()?;

    if let Some(rule) = &options.rename {
        // Every name the rule makes is checked before anything changes (a
        // move renames items before the walk below).
        for item in resolved.items.iter().filter(|item| !item.skip) {
            let mut tree = walk::walk(&item.source, control)?;
            names::name_entries(&mut tree, &item.source, Some(rule))?;
        }
    }

    let mut outcome = Outcome::default();
    let mut to_copy = Vec::new();
    // Items an earlier run of this job put in place.
    let mut placed_earlier = Vec::new();
    for (index, item) in resolved.items.iter().enumerate() {
        if item.skip {
            progress.add_totals(1, 0);
            progress.add_files_done(1);
            progress.note_conflict(ConflictDecision::Skipped);
            outcome.skipped += 1;
            if resume.placed.contains(&index) {
                placed_earlier.push(item);
            }
            continue;
        }
        if item.merge {
            // Its target exists by design: placed entry by entry below.
            to_copy.push((index, Cow::Borrowed(item)));
            continue;
        }
        let item = match transfer.look_at_target(item, index)? {
            AtTarget::Placed => {
                outcome.copied += 1;
                placed_earlier.push(item);
                continue;
            }
            AtTarget::Foreign => {
                // What an earlier run left of it under its temporary name
                // goes: the item is skipped, fails, or is placed entry by
                // entry into what stands there now (none of which uses it).
                if options.on_conflict != Conflict::Overwrite || item_meets_directory(item) {
                    transfer.discard_own_leftover(item, index);
                }
                match options.on_conflict {
                    Conflict::Skip => {
                        transfer.count_item_without_copy();
                        progress.note_conflict(ConflictDecision::Skipped);
                        journal.item_done(index);
                        outcome.skipped += 1;
                        continue;
                    }
                    Conflict::Fail => {
                        transfer.count_item_without_copy();
                        let failure = (
                            item.source.clone(),
                            provenance::foreign_target(&item.target),
                        );
                        transfer.failures.lock().unwrap().push(failure);
                        continue;
                    }
                    Conflict::Overwrite if !item_meets_directory(item) => Cow::Owned(Item {
                        replace: true,
                        ..item.clone()
                    }),
                    Conflict::Overwrite
                    | Conflict::Update
                    | Conflict::Rename
                    | Conflict::Backup
                    | Conflict::Ask => {
                        to_copy.push((
                            index,
                            Cow::Owned(Item {
                                merge: true,
                                ..item.clone()
                            }),
                        ));
                        continue;
                    }
                }
            }
            AtTarget::Free => Cow::Borrowed(item),
        };
        if resolved.request.operation == Operation::Move && transfer.try_rename(&item, index)? {
            journal.item_done(index);
            outcome.renamed += 1;
            continue;
        }
        to_copy.push((index, item));
    }

    // Walk everything first, so totals are known before the first byte.
    let mut trees = Vec::with_capacity(to_copy.len());
    let to_copy: Vec<(usize, &Item)> = to_copy
        .iter()
        .map(|(index, item)| (*index, &**item))
        .collect();
    for (_, item) in &to_copy {
        let mut tree = walk::walk(&item.source, control)?;
        names::name_entries(&mut tree, &item.source, options.rename.as_ref())?;
        progress.add_totals(tree.entry_count(), tree.bytes);
        trees.push(tree);
    }
    // A file with other names may have one among what an earlier run
    // placed: linked to that copy, as it would have been without the
    // restart. (Those items are walked again only in that case.)
    let may_link = |tree: &Tree| tree.entries.iter().any(links::has_other_names);
    if options.preserve.links && !placed_earlier.is_empty() && trees.iter().any(may_link) {
        transfer
            .placed
            .remember_earlier(&placed_earlier, control, options.rename.as_ref())?;
    }

    let mut work = to_copy.into_iter().zip(trees).peekable();
    while let Some(((index, item), tree)) = work.next() {
        // Small lone files in a row (`copy *.jpg dir/`) share their flushes.
        let mut group = vec![(index, item, tree)];
        if transfer.is_small_lone_file(index, item, &group[0].2) {
            let mut bytes = group[0].2.bytes;
            while group.len() < LONE_FILE_GROUP {
                let joins = |((index, item), tree): &((usize, &Item), Tree)| {
                    bytes + tree.bytes <= LONE_FILE_GROUP_BYTES
                        && transfer.is_small_lone_file(*index, item, tree)
                };
                let Some(((index, item), tree)) = work.next_if(joins) else {
                    break;
                };
                bytes += tree.bytes;
                group.push((index, item, tree));
            }
        }
        if group.len() > 1 {
            outcome.copied += transfer.copy_lone_files(&group)?;
        } else if group[0].1.merge {
            let (index, item, tree) = &group[0];
            match transfer.merge_item(*index, item, tree, options.on_conflict)? {
                merge::Merged::Whole => outcome.copied += 1,
                merge::Merged::WithSkips => outcome.skipped += 1,
            }
        } else {
            let (index, item, tree) = &group[0];
            transfer.copy_whole_item(*index, item, tree)?;
            outcome.copied += 1;
        }
    }
    outcome.failures = transfer.failures.into_inner().unwrap();
    Ok(outcome)
}

/// Whether `item` is a directory whose target is a directory too (then
/// overwrite merges instead of replacing).
fn item_meets_directory(item: &Item) -> bool {
    item.kind == EntryKind::Directory
        && fs::symlink_metadata(&item.target).is_ok_and(|m| m.is_dir())
}

fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// Deletes a moved item's source in `source_dir`, the directory its copy
/// read it from.
fn remove_moved_source_in(source_dir: &AnchoredDir, item: &Item) -> Result<()> {
    let name = item.source.file_name().unwrap_or(item.source.as_os_str());
    fsutil::remove_all(&source_dir.join(name)).map_err(|err| source_dir.explain(err))
}

fn remove_moved_source(item: &Item) -> Result<()> {
    fsutil::remove_all(&item.source)?;
    match item.source.parent() {
        Some(parent) => fsutil::fsync_dir(parent),
        None => Ok(()),
    }
}

impl Transfer<'_> {
    /// What stands at `item`'s target now. The target did not exist when
    /// the job was made (short of on-conflict overwrite), so anything there
    /// is either this item's copy, placed by an earlier run that died before
    /// saying so, or someone else's. Only the inode recorded before the
    /// rename proves the first (see `provenance`); a move's leftover source
    /// is then deleted, its copy being proven.
    fn look_at_target(&self, item: &Item, index: usize) -> Result<AtTarget> {
        let target = match fs::symlink_metadata(&item.target) {
            Ok(target) => target,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(AtTarget::Free),
            Err(err) => return Err(EngineError::io("look at", &item.target, &err)),
        };
        if self.resume.resuming && provenance::is_placed_copy(&target, index, self.resume) {
            if self.is_move() && fs::symlink_metadata(&item.source).is_ok() {
                remove_moved_source(item)?;
            }
            self.count_item_without_copy();
            self.journal.item_done(index);
            return Ok(AtTarget::Placed);
        }
        Ok(match item.replace {
            // The old target the job was asked to replace (or another file
            // in its place: replaced all the same).
            true => AtTarget::Free,
            false => AtTarget::Foreign,
        })
    }

    /// Counts an item that needs no copy (placed before, skipped, failed)
    /// as one file done, so the totals add up.
    fn count_item_without_copy(&self) {
        self.progress.add_totals(1, 0);
        self.progress.add_files_done(1);
    }

    fn is_move(&self) -> bool {
        self.operation == Operation::Move
    }

    /// Moves `item` by renaming it, if source and target share a file
    /// system. Returns false when they do not (EXDEV): it must be copied.
    fn try_rename(&self, item: &Item, index: usize) -> Result<bool> {
        self.control.checkpoint()?;
        if self.renames_inside && item.kind == EntryKind::Directory {
            // A rename of the tree would keep the names inside it.
            return Ok(false);
        }
        self.progress.set_current_path(&item.source);
        let source = fs::symlink_metadata(&item.source)
            .map_err(|err| EngineError::io("look at", &item.source, &err))?;
        let target_dir = fs::metadata(parent_of(&item.target))
            .map_err(|err| EngineError::io("look at", parent_of(&item.target), &err))?;
        if source.dev() != target_dir.dev() {
            return Ok(false);
        }
        // After the rename the target is this inode: what recovery checks
        // before it takes a target for this item's (see look_at_target).
        self.journal.item_built(index, CopyIdentity::of(&source));
        match fsutil::rename_into_place(&item.source, &item.target, item.replace) {
            Ok(()) => {}
            Err(err) if is_cross_device(&err) => return Ok(false),
            Err(err) => return Err(err),
        }
        let parent_of = |p: &Path| p.parent().unwrap_or(Path::new("/")).to_path_buf();
        fsutil::fsync_dir(&parent_of(&item.target))?;
        fsutil::fsync_dir(&parent_of(&item.source))?;
        self.progress.add_totals(1, 0);
        self.progress.add_files_done(1);
        Ok(true)
    }

    /// Copies `item` on its own: built, made durable (with sync), put in
    /// place and, for a move, its source deleted.
    fn copy_whole_item(&self, index: usize, item: &Item, tree: &Tree) -> Result<()> {
        let failures_before = self.failures.lock().unwrap().len();
        let source_dir = self.moved_source_dir(item)?;
        self.copy_item(item, index, tree)?;
        if item.replace {
            self.progress.note_conflict(ConflictDecision::Overwritten);
        }
        let whole = self.failures.lock().unwrap().len() == failures_before;
        if self.preserve.links && whole {
            self.placed.remember(&tree.entries, &item.target);
        }
        if let (Some(source_dir), true) = (&source_dir, whole) {
            // The copy is durable (copy_item synced it): now the source may go.
            remove_moved_source_in(source_dir, item)?;
            source_dir.sync()?;
        }
        self.journal.item_done(index);
        Ok(())
    }

    /// A moved source is deleted in the directory the copy read it from,
    /// even if its path names another one by then: that directory, opened
    /// before the copy.
    fn moved_source_dir(&self, item: &Item) -> Result<Option<AnchoredDir>> {
        match self.operation {
            Operation::Move => AnchoredDir::open(parent_of(&item.source)).map(Some),
            Operation::Copy => Ok(None),
        }
    }

    /// Whether `item` is one small regular file that may be copied in a
    /// group with its neighbours ([`Self::copy_lone_files`]): not when an
    /// earlier run left its partial copy to carry on from.
    fn is_small_lone_file(&self, index: usize, item: &Item, tree: &Tree) -> bool {
        // A file with other names goes alone, in order: a later item may be
        // one of them, to be linked to its copy once placed.
        let lone_file = matches!(&tree.entries[..], [entry] if entry.kind == EntryKind::File
            && !(self.preserve.links && links::has_other_names(entry)));
        let carry_on = self.resume.started.contains(&index)
            && self.own_leftover(
                &fsutil::temp_path(&item.target, self.tag, index),
                item,
                index,
            );
        lone_file && tree.bytes < LARGE_FILE && !carry_on && !item.merge
    }

    /// Copies small lone files as a group, built on the workers, and with
    /// sync sharing the flushes each would make alone (its Started line,
    /// its fdatasync, its directory's fsync: 500 files of up to 64 KiB took
    /// 337 ms against cp+sync's 57 ms). Their Started lines go in one
    /// flush; the copies are built under their temporary names, then made
    /// durable by one syncfs per file system, renamed, and their
    /// directories fsynced once each (for moves, the sources deleted after,
    /// one fsync per source directory). What is built is placed at least
    /// every GROUP_COMMIT_INTERVAL, so a crash loses little work.
    ///
    /// On an error, the files whose building had begun (every file before
    /// it, maybe one after it on the other worker) are placed first, then
    /// the error returns. Returns how many were placed.
    fn copy_lone_files(&self, group: &[(usize, &Item, Tree)]) -> Result<usize> {
        let indices: Vec<usize> = group.iter().map(|(index, ..)| *index).collect();
        self.journal.items_started(&indices);
        // Each file's directories, opened once for the whole group.
        let mut dirs = OpenDirs::default();
        let places = group
            .iter()
            .map(|(_, item, _)| {
                let source_dir = match self.operation {
                    Operation::Move => Some(dirs.open(parent_of(&item.source))?),
                    Operation::Copy => None,
                };
                Ok((dirs.open(parent_of(&item.target))?, source_dir))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut placed = 0;
        let mut pending: Vec<usize> = (0..group.len()).collect();
        while !pending.is_empty() {
            let (built, failed, left) = self.build_round(group, &places, &pending);
            let placing = self.place_together(&built);
            if let Some(err) = failed {
                if let Err(placing) = placing {
                    tracing::warn!(%placing, "could not place the files copied before an error");
                }
                return Err(err);
            }
            placing?;
            placed += built.len();
            pending = left;
        }
        Ok(placed)
    }

    /// Builds the files of `group` at positions `pending` on the workers,
    /// in order, until one fails or GROUP_COMMIT_INTERVAL has passed.
    /// Returns the files built, the first error, and the positions left
    /// for the next round.
    #[allow(clippy::type_complexity)]
    fn build_round<'i>(
        &self,
        group: &[(usize, &'i Item, Tree)],
        places: &[(Arc<AnchoredDir>, Option<Arc<AnchoredDir>>)],
        pending: &[usize],
    ) -> (Vec<LoneFile<'i>>, Option<EngineError>, Vec<usize>) {
        let since = std::time::Instant::now();
        let slots: Vec<Mutex<Option<Result<LoneFile<'i>>>>> =
            pending.iter().map(|_| Mutex::new(None)).collect();
        let numbered: Vec<usize> = (0..pending.len()).collect();
        let workers = self.workers_for_small_files(
            parallel::worker_count(self.workers, pending.len()),
            pending.len(),
            |k| {
                group[pending[k * pending.len() / COLD_SAMPLES]]
                    .1
                    .source
                    .clone()
            },
        );
        let _stopped = parallel::for_each(workers, &numbered, |&n| {
            // The first is always built, so every round makes progress.
            if n > 0 && since.elapsed() >= GROUP_COMMIT_INTERVAL {
                return Ok(()); // for the next round
            }
            let (index, item, tree) = &group[pending[n]];
            let (anchor, source_dir) = &places[pending[n]];
            let result = self.build_lone_file(*index, item, tree, anchor, source_dir);
            let failed = result.is_err();
            *slots[n].lock().unwrap() = Some(result);
            match failed {
                // Stops the workers claiming more; the error is in its slot.
                true => Err(EngineError::cancelled()),
                false => Ok(()),
            }
        });
        let (mut built, mut failed, mut left) = (Vec::new(), None, Vec::new());
        for (slot, &position) in slots.into_iter().zip(pending) {
            match slot.into_inner().unwrap() {
                Some(Ok(lone)) => built.push(lone),
                Some(Err(err)) => {
                    failed.get_or_insert(err);
                }
                None => left.push(position),
            }
        }
        (built, failed, left)
    }

    /// Builds a lone file of a group under its temporary name, not synced.
    fn build_lone_file<'i>(
        &self,
        index: usize,
        item: &'i Item,
        tree: &Tree,
        anchor: &Arc<AnchoredDir>,
        source_dir: &Option<Arc<AnchoredDir>>,
    ) -> Result<LoneFile<'i>> {
        let (temp, target) = self.names_in(anchor, item, index);
        self.clear_leftover(&temp, item, index)
            .map_err(|err| anchor.explain(err))?;
        if let Err(err) = self.build(item, index, tree, &temp, false, false) {
            self.discard(&temp);
            return Err(anchor.explain(err));
        }
        Ok(LoneFile {
            index,
            item,
            anchor: Arc::clone(anchor),
            temp,
            target,
            source_dir: source_dir.clone(),
        })
    }

    /// Makes `built` durable with one syncfs per file system, renames each
    /// into place and fsyncs their directories once each (the flushes only
    /// with sync); for moves, then deletes the sources. A rename that fails
    /// stops the renames, and the copies not renamed are discarded; those
    /// renamed stay, made durable.
    fn place_together(&self, built: &[LoneFile<'_>]) -> Result<()> {
        if self.sync {
            if let Err(err) = sync_each_file_system(built.iter().map(|lone| &*lone.anchor)) {
                built.iter().for_each(|lone| self.discard(&lone.temp));
                return Err(err);
            }
        }
        let identities = built
            .iter()
            .map(|lone| Ok((lone.index, built_identity(&lone.temp)?)))
            .collect::<Result<Vec<_>>>();
        match identities {
            Ok(identities) => self.journal.items_built(&identities),
            Err(err) => {
                built.iter().for_each(|lone| self.discard(&lone.temp));
                return Err(err);
            }
        }
        let mut failed = None;
        let mut renamed = 0;
        for lone in built {
            if let Err(err) = fsutil::rename_into_place(&lone.temp, &lone.target, lone.item.replace)
            {
                failed = Some(lone.anchor.explain(err));
                break;
            }
            if lone.item.replace {
                self.progress.note_conflict(ConflictDecision::Overwritten);
            }
            renamed += 1;
        }
        built[renamed..]
            .iter()
            .for_each(|lone| self.discard(&lone.temp));
        let placed = &built[..renamed];
        if self.sync {
            sync_each_directory(placed.iter().map(|lone| &*lone.anchor))?;
        }
        for lone in placed {
            if let Some(source_dir) = &lone.source_dir {
                remove_moved_source_in(source_dir, lone.item)?;
            }
        }
        sync_each_directory(placed.iter().filter_map(|lone| lone.source_dir.as_deref()))?;
        for lone in placed {
            self.journal.item_done(lone.index);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Removes a temporary copy that will not be placed, unless the job is
    /// interrupted: an interrupted job keeps its partial copies for the
    /// resume; a failed or cancelled one leaves nothing behind.
    fn discard(&self, temp: &Path) {
        if self.control.is_interrupted() {
            return;
        }
        if let Err(cleanup) = fsutil::remove_all(temp) {
            tracing::warn!(%cleanup, "could not remove a temporary copy");
        }
    }

    /// Whether something stands at `temp` that is this job's own, left by
    /// an earlier run (see `provenance`).
    fn own_leftover(&self, temp: &Path, item: &Item, index: usize) -> bool {
        fs::symlink_metadata(temp).is_ok_and(|leftover| {
            provenance::is_own_leftover(&leftover, item, index, self.resume, self.preserve)
        })
    }

    /// Removes what an earlier run left of an item that will not be built
    /// now, if it is this job's own; a failure is only logged (the item is
    /// not built either way).
    fn discard_own_leftover(&self, item: &Item, index: usize) {
        let Ok(anchor) = AnchoredDir::open(parent_of(&item.target)) else {
            return;
        };
        let (temp, _) = self.names_in(&anchor, item, index);
        if self.own_leftover(&temp, item, index) {
            if let Err(err) = fsutil::remove_all(&temp) {
                tracing::warn!(err = %anchor.explain(err), "could not remove a temporary copy");
            }
        }
    }

    /// Frees `temp` for a fresh build: removes a leftover of this job's;
    /// anything else there is left alone, and the item fails (the name has
    /// a random part per job: nobody else's file gets it by chance).
    fn clear_leftover(&self, temp: &Path, item: &Item, index: usize) -> Result<()> {
        match fs::symlink_metadata(temp) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(EngineError::io("look at", temp, &err)),
            Ok(_) if self.own_leftover(temp, item, index) => fsutil::remove_all(temp),
            Ok(_) => Err(provenance::foreign_temporary(temp)),
        }
    }

    /// The item's temporary and final paths through `anchor`, its target's
    /// directory opened before the copy: everything after goes through that
    /// open directory, so a symlink swapped into the destination's path
    /// meanwhile changes nothing.
    fn names_in(&self, anchor: &AnchoredDir, item: &Item, index: usize) -> (PathBuf, PathBuf) {
        let temp_name = fsutil::temp_path(&item.target, self.tag, index);
        let temp = anchor.join(temp_name.file_name().expect("temp names have a name"));
        let target = anchor.join(item.target.file_name().unwrap_or(item.target.as_os_str()));
        (temp, target)
    }

    /// Builds `item` under its temporary name, makes it durable (with sync)
    /// and renames it into place. On failure the temporary is removed.
    fn copy_item(&self, item: &Item, index: usize, tree: &Tree) -> Result<()> {
        let anchor = AnchoredDir::open(parent_of(&item.target))?;
        let (temp, target) = self.names_in(&anchor, item, index);
        let carry_on =
            self.resume.started.contains(&index) && self.own_leftover(&temp, item, index);
        if !carry_on {
            self.clear_leftover(&temp, item, index)
                .map_err(|err| anchor.explain(err))?;
            self.journal.item_started(index);
        }
        let built = self
            .build(item, index, tree, &temp, carry_on, self.sync)
            .and_then(|()| {
                self.journal.item_built(index, built_identity(&temp)?);
                fsutil::rename_into_place(&temp, &target, item.replace)
            });
        if let Err(err) = built {
            self.discard(&temp);
            return Err(anchor.explain(err));
        }
        if self.sync {
            anchor.sync()?;
        }
        Ok(())
    }

    /// Builds the copy of `tree` at `temp`, in phases: directories (walk
    /// order, so parents first), then files on the worker threads, then
    /// hard links to files copied, then symlinks, then directory metadata
    /// deepest first (making entries in a directory changes its times), then
    /// (with sync) one syncfs for the lot. A lone file is fdatasynced
    /// instead, if `sync_lone_file`.
    fn build(
        &self,
        item: &Item,
        index: usize,
        tree: &Tree,
        temp: &Path,
        carry_on: bool,
        sync_lone_file: bool,
    ) -> Result<()> {
        let entries = &tree.entries;
        let group = GroupCommit::new(index, self.journal);
        let temp_parent = temp.parent().unwrap_or(Path::new("/"));
        // On carrying on, whatever stands at a copy's path is from the
        // interrupted run: replaced unless the journal vouches for it.
        let clear = |copy: &Path| {
            if carry_on {
                fsutil::remove_all(copy)
            } else {
                Ok(())
            }
        };
        let single_file = entries.len() == 1 && entries[0].kind == EntryKind::File;
        let link_of = if self.preserve.links {
            links::plan(entries)
        } else {
            vec![None; entries.len()]
        };
        let paths = |entry: &Entry| {
            (
                under(&item.source, &entry.relative),
                under(temp, entry.copy_relative()),
            )
        };

        // Directories, a level at a time (parents first), the directories
        // of a level on the workers together.
        let levels = directory_levels(entries);
        let level_workers = |level: &[&Entry]| parallel::worker_count(self.workers, level.len());
        for level in &levels {
            parallel::for_each(level_workers(level), level, |entry| {
                self.control.checkpoint()?;
                let (_, copy) = paths(entry);
                match fs::DirBuilder::new().mode(0o700).create(&copy) {
                    Err(err) if carry_on && err.kind() == io::ErrorKind::AlreadyExists => {}
                    result => {
                        result.map_err(|err| EngineError::io("create directory", &copy, &err))?
                    }
                }
                // Counted done with its metadata, after its files: counted
                // here, a tree's directories made files_done run ahead of
                // bytes_done before any file was copied.
                Ok(())
            })?;
        }

        // Large files first, largest first, so one big file does not start
        // last and run alone; then the small ones in walk order, handed out
        // in runs of one directory's files.
        let (mut files, small): (Vec<&Entry>, Vec<&Entry>) = entries
            .iter()
            .zip(&link_of)
            .filter(|(e, link)| e.kind == EntryKind::File && link.is_none())
            .map(|(e, _)| e)
            .partition(|e| e.metadata.len() >= LARGE_FILE);
        files.sort_by_key(|e| std::cmp::Reverse(e.metadata.len()));
        // Each large file is a run of its own; small ones go in runs of one
        // directory's files (at most SMALL_FILE_RUN of them).
        let large = files.len();
        let mut runs: Vec<_> = (0..large).map(|i| i..i + 1).collect();
        for entry in small {
            let next = files.len();
            match runs.last_mut() {
                Some(run)
                    if run.start >= large
                        && run.len() < SMALL_FILE_RUN
                        && files[run.start].directory() == entry.directory() =>
                {
                    run.end = next + 1
                }
                _ => runs.push(next..next + 1),
            }
            files.push(entry);
        }
        let workers = self.file_workers(&files, large, &item.source);
        // A tree whose progress is kept has its finished files made durable
        // in groups as they come, beside the workers.
        let committing = !single_file && self.journal.is_kept();
        // What follows every file's copy, however it was made.
        let finished = |entry: &Entry| -> Result<()> {
            self.progress.add_files_done(1);
            if committing {
                group.finished(entry.relative.clone())?;
            }
            Ok(())
        };
        let one_file = |entry: &Entry, dirs: Option<&RunDirs>| -> Result<()> {
            self.control.checkpoint()?;
            let (source, copy) = paths(entry);
            if carry_on && self.resume.is_durable(index, &entry.relative) {
                self.progress.add_bytes_uncopied(entry.metadata.len());
                self.progress.add_files_done(1);
                return Ok(());
            }
            // Another name of a file an earlier item copied: linked to that
            // copy, as within a tree.
            if self.preserve.links && links::has_other_names(entry) {
                if carry_on {
                    fsutil::remove_all(&copy)?;
                }
                if self.placed.link(entry, &copy) {
                    self.progress.add_bytes_uncopied(entry.metadata.len());
                    return finished(entry);
                }
            }
            self.progress.set_current_path(&source);
            let sync = single_file && sync_lone_file;
            let at = FileAt {
                source: &source,
                copy: &copy,
                dirs,
            };
            match self.copy_file(at, entry, sync, index, carry_on) {
                Err(err) if err.per_file && !single_file => {
                    // Go on without it; nothing of it stays in the copy.
                    fsutil::remove_all(&copy)?;
                    self.progress.add_bytes_uncopied(entry.metadata.len());
                    self.failures.lock().unwrap().push((source, err));
                }
                result => result?,
            }
            finished(entry)
        };
        // Only a fresh build's copies are created in place by name: carrying
        // on looks at each path first.
        let fresh_tree = !single_file && !carry_on;
        let copy_files = || {
            parallel::for_each_whole_run(workers, &files, &runs, |run, stopped| {
                // A run of one directory's files names them relative to that
                // directory and its copy, opened once.
                let dirs = match fresh_tree && run.len() > 1 {
                    true => RunDirs::open(run, &item.source, temp, self.preserve),
                    false => None,
                };
                // Its small files may go through a ring in batches; whatever a
                // batch does not copy goes the ordinary way.
                let rest = match (&dirs, self.small_file_batches()) {
                    (Some(dirs), Some(rings)) => {
                        self.copy_in_batches(rings, run, dirs, &finished)?
                    }
                    _ => run.to_vec(),
                };
                for entry in rest {
                    if stopped() {
                        break;
                    }
                    one_file(entry, dirs.as_ref())?;
                }
                Ok(())
            })
        };
        match committing {
            true => group.commit_beside(|| fsutil::sync_filesystem(temp_parent), copy_files)?,
            false => copy_files()?,
        }

        for (entry, first) in entries.iter().zip(&link_of) {
            if let Some(first) = first {
                self.control.checkpoint()?;
                let ((_, copy), (_, original)) = (paths(entry), paths(&entries[*first]));
                clear(&copy)?;
                fs::hard_link(&original, &copy)
                    .map_err(|err| EngineError::io("link", &copy, &err))?;
                // Its bytes are in the total, but cost nothing.
                self.progress.add_bytes_uncopied(entry.metadata.len());
                self.progress.add_files_done(1);
            }
        }

        // Symlinks and special files are made anew, nothing read through
        // them. One that cannot be (a device node, for a caller who may not
        // create one) fails alone, unless it is the whole item.
        let nodes = entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Symlink | EntryKind::Special));
        for entry in nodes {
            self.control.checkpoint()?;
            let (source, copy) = paths(entry);
            self.progress.set_current_path(&source);
            clear(&copy)?;
            match make_node(entry, &source, &copy) {
                Err(err) if err.per_file && entries.len() > 1 => {
                    self.failures.lock().unwrap().push((source, err));
                    self.progress.add_files_done(1);
                    continue;
                }
                result => result?,
            }
            metadata::carry_path_metadata(Some(&source), &copy, &entry.metadata, &self.preserve)?;
            self.progress.add_files_done(1);
        }

        // Directory metadata deepest level first: a directory whose mode
        // shuts its owner out must not be given it before its
        // subdirectories got theirs. Within a level, order does not matter
        // (a directory's own times change only with its entries).
        for level in levels.iter().rev() {
            parallel::for_each(level_workers(level), level, |entry| {
                let (source, copy) = paths(entry);
                metadata::carry_path_metadata(
                    Some(&source),
                    &copy,
                    &entry.metadata,
                    &self.preserve,
                )?;
                self.progress.add_files_done(1);
                Ok(())
            })?;
        }
        if !single_file && self.sync {
            // One syncfs for a whole tree instead of one fsync per file.
            fsutil::sync_filesystem(temp.parent().unwrap_or(Path::new("/")))?;
        }
        Ok(())
    }

    /// Workers for a tree's `files` (the first `large` of them large): as
    /// [`Self::workers_for_small_files`] says, unless there are more large
    /// files than CPUs (many large files at once compete for the device).
    fn file_workers(&self, files: &[&Entry], large: usize, source: &Path) -> usize {
        let workers = parallel::worker_count(self.workers, files.len());
        let small = &files[large..];
        if large > workers {
            return workers;
        }
        self.workers_for_small_files(workers, small.len(), |k| {
            under(source, &small[k * small.len() / COLD_SAMPLES].relative)
        })
    }

    /// `workers` (one per CPU, or as many as asked), or four per CPU (at
    /// most 16) for `count` small files whose bytes must come from the
    /// device, when the caller did not choose a number: `sample(k)`, for k
    /// below COLD_SAMPLES, names the files looked at (see
    /// `residency::most_files_uncached`). Each such file is one short read
    /// that waits for the device, and two readers leave a virtio or NVMe
    /// queue nearly empty: 40,000 files of 1–16 KiB, cold, `tree_bench` (2
    /// CPUs), their copying took 3.08 s with 2 workers, 1.95–2.20 s with 4,
    /// 1.47–2.08 s with 8, 1.35–2.19 s with 16; warm, 8 workers did as well
    /// as 2 (ext4 in memory 683–746 ms against 713–753 ms; tmpfs 436–462 ms
    /// against 422–442 ms).
    fn workers_for_small_files(
        &self,
        workers: usize,
        count: usize,
        sample: impl Fn(usize) -> PathBuf,
    ) -> usize {
        if self.workers != 0 || count < COLD_SAMPLES * 8 {
            return workers;
        }
        let sampled: Vec<PathBuf> = (0..COLD_SAMPLES).map(sample).collect();
        if !residency::most_files_uncached(sampled.iter().map(PathBuf::as_path)) {
            return workers;
        }
        tracing::debug!(count, "small files not cached: more workers");
        (workers * 4).min(MAX_COLD_WORKERS).min(count)
    }

    /// The rings to copy a run's small files with: only when the io_uring
    /// engine is asked for by name. `auto` never batches, because batches
    /// lose here. Measured with `tree_bench` on 40,000 files of 1-16 KiB (no
    /// journal, 2 workers, 2-core VM, kernel 6.18), alternating: ext4 →
    /// tmpfs, median of 5: one file at a time 0.593 s, batches 0.670 s,
    /// batches with io-wq held to one worker per ring 0.887 s; ext4 → ext4,
    /// 3 rounds: 2.34/1.31/2.01 s against 3.74/1.90/2.54 s. Every create is
    /// handed to an io-wq thread (the kernel never creates inline), so a
    /// batch of one directory's files becomes up to 32 threads queueing on
    /// that directory's lock, on 2 CPUs; the calls saved do not pay for it.
    fn small_file_batches(&self) -> Option<&BatchRings> {
        match self.chain.as_slice() {
            [only] => only.small_file_batches(),
            _ => None,
        }
    }

    /// Copies the files of `run` (all in the directories `dirs`) that suit
    /// a batch (small whole files) through `rings`, with their metadata,
    /// calling `finished` for each; returns the entries left for the
    /// ordinary way: those that do not suit, and those a batch could not
    /// copy (their partial copies removed), whose errors the ordinary way
    /// reports.
    fn copy_in_batches<'e>(
        &self,
        rings: &BatchRings,
        run: &[&'e Entry],
        dirs: &RunDirs,
        finished: &dyn Fn(&Entry) -> Result<()>,
    ) -> Result<Vec<&'e Entry>> {
        // A batch copies each file's size in bytes: files whose size may
        // not be their contents' (see `copy_file`) go the ordinary way.
        let untrusted = self
            .known
            .sizes_untrusted(run[0].metadata.dev(), &dirs.source);
        let (batch, mut rest): (Vec<&Entry>, Vec<&Entry>) = run.iter().partition(|entry| {
            entry.kind == EntryKind::File
                // A batch names a file and its copy alike.
                && entry.target.is_none()
                && !untrusted
                && (1..=BATCH_FILE_MAX).contains(&entry.metadata.len())
                && !maybe_sparse(&entry.metadata)
                && !(self.preserve.links && links::has_other_names(entry))
        });
        let names: Vec<(&Path, std::ffi::CString)> = batch
            .iter()
            .map(|entry| {
                let name = FileAt::name(&entry.relative);
                let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
                (
                    name,
                    std::ffi::CString::new(bytes).expect("file names hold no NUL"),
                )
            })
            .collect();
        let files: Vec<SmallFile<'_>> = batch
            .iter()
            .zip(&names)
            .map(|(entry, (_, name))| SmallFile {
                name,
                len: entry.metadata.len(),
                mode: dirs.created_mode(&entry.metadata),
            })
            .collect();
        self.control.checkpoint()?;
        self.progress.set_current_path(&dirs.source_path);
        rings.copy(dirs.source.as_fd(), dirs.copy.as_fd(), &files, |i, outcome| {
            let (entry, name) = (batch[i], names[i].0);
            match outcome {
                SmallFileResult::Copied => {
                    metadata::carry_metadata_at(
                        dirs.copy.as_fd(),
                        name,
                        &dirs.copy_path.join(name),
                        Some(&dirs.source_path.join(name)),
                        &entry.metadata,
                        &dirs.preserve_after_create(&entry.metadata),
                    )?;
                    self.progress.add_bytes(EngineId::IoUring.name(), entry.metadata.len());
                    self.control.throttle(entry.metadata.len())?;
                    finished(entry)
                }
                SmallFileResult::Failed { error, created } => {
                    tracing::debug!(%error, file = %dirs.source_path.join(name).display(), "batched copy failed; copying it alone");
                    if created {
                        match rustix::fs::unlinkat(dirs.copy.as_fd(), name, rustix::fs::AtFlags::empty()) {
                            Ok(()) | Err(Errno::NOENT) => {}
                            Err(errno) => {
                                return Err(EngineError::io("remove", &dirs.copy_path.join(name), &errno.into()))
                            }
                        }
                    }
                    rest.push(entry);
                    Ok(())
                }
            }
        })?;
        Ok(rest)
    }

    /// Copies one file to `copy`. On carrying on, a partial copy whose
    /// source is unchanged continues from its durable offset; anything else
    /// at `copy` is replaced.
    #[allow(clippy::too_many_arguments)]
    fn copy_file(
        &self,
        at: FileAt<'_>,
        entry: &Entry,
        sync: bool,
        index: usize,
        carry_on: bool,
    ) -> Result<()> {
        let (source, copy) = (at.source, at.copy);
        let src = at
            .open_source()
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
        let ctx = CopyContext {
            progress: self.progress,
            control: self.control,
            source,
            observer: None,
        };
        let offsets = OffsetCommits {
            journal: self.journal,
            index,
            relative: &entry.relative,
            source: &opened,
            committed: Mutex::new((0, std::time::Instant::now())),
        };
        let start = resume_at.unwrap_or(0).min(len);
        if start > 0 {
            self.progress.add_bytes_uncopied(start);
        }
        if size_untrusted {
            let copied = engines::standard::copy_to_end(&src, &dst, 0, &ctx)?;
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
                    // Fewer blocks than bytes: maybe holes (or inline data),
                    // so look for them; else the whole file is data (as cp
                    // judges).
                    maybe_sparse: maybe_sparse(&entry.metadata),
                };
                self.copy_data(&src, &dst, start, len, &ctx, &offsets, file)?;
            }
            // Data at the size means the size lied (a file system that
            // reports sizes wrong, or a file still growing): the rest goes
            // by read to end of file, as cp would have read it.
            let more = engines::standard::copy_to_end(&src, &dst, len, &ctx)?;
            if more > 0 {
                tracing::debug!(file = %source.display(), more, "more data than its size: read to its end");
                self.progress.add_totals(0, more);
            }
        }
        let preserve = match (resume_at, at.dirs) {
            (None, Some(dirs)) => dirs.preserve_after_create(&entry.metadata),
            _ => self.preserve,
        };
        metadata::carry_file_metadata(Some(&src), &dst, copy, &entry.metadata, &preserve)?;
        if sync {
            dst.sync_data()
                .map_err(|err| EngineError::io("sync", copy, &err))?;
        }
        Ok(())
    }

    /// Whether a file's `bytes` of data go by [`read_ahead`] (read and
    /// write on two threads) rather than by the first engine of `chain`:
    /// only under `auto`, for a moderate amount of data (see
    /// READ_AHEAD_BYTES), where that engine would move the bytes through
    /// the page cache anyway: splice, io_uring, read and write, or
    /// copy_file_range into a local file system (on NFS or SMB it copies
    /// on the server, which no reading here beats).
    fn reads_ahead(&self, chain: &[&dyn FileCopier], dst: &File, bytes: u64) -> bool {
        if !self.auto || !READ_AHEAD_BYTES.contains(&bytes) {
            return false;
        }
        match chain.first().map(|engine| engine.id().capabilities()) {
            Some(first) if first.offloads => fsutil::is_local_page_cache_fs(dst),
            Some(_) => true,
            None => false,
        }
    }

    /// Copies a file's `len` bytes: whole by an engine that shares extents,
    /// if one can here; otherwise data extent by data extent (with sparse),
    /// leaving holes as holes and counting them as done.
    #[allow(clippy::too_many_arguments)]
    fn copy_data(
        &self,
        src: &File,
        dst: &File,
        start: u64,
        len: u64,
        ctx: &CopyContext<'_>,
        offsets: &OffsetCommits<'_>,
        file: FileFacts,
    ) -> Result<()> {
        let known = &self.known;
        let (cloners, movers) = (&self.cloners, &self.movers);
        let skip = known.get(file.device);
        // Sharing extents is all or nothing: only for a copy from the start.
        // (Known not to work here, it is not tried, unless nothing else is.)
        let try_clone = !skip.no_clone || movers.is_empty();
        if try_clone && start == 0 && !cloners.is_empty() {
            match try_chain(cloners, src, dst, 0, len, ctx)? {
                Ok(_) => return Ok(()),
                Err(unsupported) if movers.is_empty() => {
                    return Err(unsupported.into_error(ctx.source))
                }
                Err(unsupported) => {
                    if is_unsupported_by_file_system(&unsupported.error) {
                        known.no_clone(file.device);
                    }
                }
            }
        }
        let extents = if self.sparse && file.maybe_sparse {
            sparse::data_extents(src, len)
        } else {
            std::iter::once(0..len).collect()
        };
        // An engine that could not copy one extent of this pair of files
        // cannot copy the next either, nor one of the next file from the
        // same file system: start each try where the last worked.
        let mut chain = &movers[skip.movers.min(movers.len().saturating_sub(1))..];
        // A small file's bytes are moved cheapest by one read and one write:
        // splice pays for a pipe (six calls), io_uring for submitting. (Not
        // remembered: the next file may be large.)
        let plain = |e: &&dyn FileCopier| {
            let can = e.id().capabilities();
            can.bytes_in_user_space && !can.setup_per_call
        };
        let small_path = match chain.iter().position(plain) {
            Some(at) if len - start <= SMALL_DATA => {
                let faster_for_small = chain[..at]
                    .iter()
                    .all(|e| e.id().capabilities().setup_per_call);
                if faster_for_small {
                    chain = &chain[at..];
                }
                faster_for_small
            }
            _ => false,
        };
        // What an earlier run made durable is not copied again; large
        // extents go in segments, so the durable offset can advance.
        let pieces = pieces_of(&extents, start, SEGMENT);
        let copied = start + pieces.iter().map(|p| p.end - p.start).sum::<u64>();
        if chain.is_empty() && !pieces.is_empty() {
            // Only an extent-sharing engine was asked for, and it shares
            // whole files: it cannot carry on a partial copy.
            return Err(EngineError::new(
                crate::error::ErrorKind::NotSupported,
                format!(
                    "cannot carry on the partial copy of {} with the engines asked for",
                    ctx.source.display()
                ),
            ));
        }
        let written_back = |piece: &std::ops::Range<u64>| {
            if file.synced && len >= LARGE_FILE {
                start_writeback(dst, piece);
            }
        };
        if len >= LARGE_FILE {
            // Read ahead further, as cp does.
            let _ = rustix::fs::fadvise(src, start, None, rustix::fs::Advice::Sequential);
        }
        // A large file that must come from the device is read by several
        // streams, piece by piece: one sequential reader leaves the device
        // mostly idle (see `residency`). A cached one gets one stream.
        let streams = match pieces.len() >= 2 && residency::mostly_uncached(src, &pieces) {
            true => parallel::worker_count(self.workers, pieces.len()).min(MAX_STREAMS),
            false => 1,
        };
        // Engines of `chain` that could not copy a piece of this pair of
        // files are not tried on the next (by any stream).
        let failed_engines = AtomicUsize::new(0);
        let copy_piece = |piece: &std::ops::Range<u64>| -> Result<()> {
            let skipped = failed_engines.load(Ordering::Relaxed);
            let length = piece.end - piece.start;
            match try_chain(&chain[skipped..], src, dst, piece.start, length, ctx)? {
                Ok(used) => failed_engines.fetch_max(skipped + used, Ordering::Relaxed),
                Err(unsupported) => return Err(unsupported.into_error(ctx.source)),
            };
            written_back(piece);
            Ok(())
        };
        let read_ahead = streams == 1 && self.reads_ahead(chain, dst, copied - start);
        if read_ahead {
            // Told of every MiB written (it writes a MiB at a time), so the
            // offset can advance on time at any rate; writeback still goes
            // by segment.
            let parts = pieces_of(&extents, start, READ_AHEAD_PART);
            let mut written_from = start;
            read_ahead::copy_pieces(src, dst, &parts, ctx, |part| {
                let whole_segment = part.end - written_from >= SEGMENT;
                if whole_segment || pieces.iter().any(|piece| piece.end == part.end) {
                    written_back(&(written_from..part.end));
                    written_from = part.end;
                }
                offsets.maybe_commit(dst, part.end)
            })?;
        } else if streams == 1 {
            // Each piece again in parts of about PIECE_TIME, however fast the
            // bytes go, so that the offset can advance on time.
            let mut pace = Pace::new(ctx.control.rate_limit());
            for piece in &pieces {
                let mut at = piece.start;
                while at < piece.end {
                    let part = at..pace.end_of_part(at, piece.end);
                    let began = std::time::Instant::now();
                    copy_piece(&part)?;
                    pace.took(part.end - part.start, began.elapsed());
                    offsets.maybe_commit(dst, part.end)?;
                    at = part.end;
                }
            }
        } else {
            tracing::debug!(
                streams,
                pieces = pieces.len(),
                file = %ctx.source.display(),
                "copying an uncached file in several streams"
            );
            let finished = FinishedPieces::new(&pieces);
            let numbered: Vec<usize> = (0..pieces.len()).collect();
            // Each stream's share of the rate limit paces its parts.
            let share = ctx.control.rate_limit() / streams as u64;
            parallel::for_each(streams, &numbered, |&number| {
                // In parts of about PIECE_TIME, as one stream copies, so the
                // offset can advance on time within the leading piece.
                let piece = &pieces[number];
                let mut pace = Pace::new(share);
                let mut at = piece.start;
                while at < piece.end {
                    let part = at..pace.end_of_part(at, piece.end);
                    let began = std::time::Instant::now();
                    copy_piece(&part)?;
                    pace.took(part.end - part.start, began.elapsed());
                    at = part.end;
                    offsets.maybe_commit(dst, finished.advance(number, at))?;
                }
                Ok(())
            })?;
        }
        if !small_path && !read_ahead {
            let skipped = movers.len() - chain.len() + failed_engines.into_inner();
            known.movers_skipped(file.device, skipped);
        }
        if copied < len {
            ctx.progress.add_bytes_uncopied(len - copied);
            // Trailing holes: the copy ends where its last extent did.
            dst.set_len(len)
                .map_err(|err| EngineError::io("extend the copy of", ctx.source, &err))?;
        }
        Ok(())
    }
}

/// The source directory of a run of files and the directory their copies
/// go to, opened once, so each file is named by one lookup of its name.
struct RunDirs {
    source: File,
    copy: File,
    source_path: std::path::PathBuf,
    copy_path: std::path::PathBuf,
    preserve: Preserve,
    /// Copies may be created with their final mode (see `created_mode`).
    exact_modes: bool,
}

impl RunDirs {
    /// The directories of `run`, if all its entries are files of one
    /// directory below `source_root` (copied below `copy_root`) and both
    /// open.
    fn open(
        run: &[&Entry],
        source_root: &Path,
        copy_root: &Path,
        preserve: Preserve,
    ) -> Option<Self> {
        let parent = run[0].relative.parent()?;
        if run
            .iter()
            .any(|e| e.kind != EntryKind::File || e.directory() != parent.as_os_str())
        {
            return None;
        }
        // One source directory's entries share one copy directory.
        let copy_parent = run[0].copy_relative().parent()?;
        let (source_path, copy_path) = (under(source_root, parent), under(copy_root, copy_parent));
        let source = open_directory(&source_path).ok()?;
        let copy = open_directory(&copy_path).ok()?;
        // Without a chown to come (which clears bits), extended attributes
        // to set (an ACL sets the mode) or a default ACL that the kernel
        // would apply instead of the mode asked for.
        let exact_modes = preserve.mode
            && !preserve.ownership
            && !preserve.xattr
            && !metadata::has_default_acl(copy.as_fd());
        Some(RunDirs {
            source,
            copy,
            source_path,
            copy_path,
            preserve,
            exact_modes,
        })
    }

    /// The mode a copy of a file with `metadata` is created with: its final
    /// mode when the kernel will give it exactly that (no bit the umask
    /// clears), which saves a chmod; else 0600, and the final mode comes
    /// when the copy is complete. Either way it is private until complete:
    /// a tree is built in directories of mode 0700 that get their own modes
    /// only at the end.
    fn created_mode(&self, metadata: &fs::Metadata) -> u32 {
        let mode = metadata::copy_mode(metadata);
        if self.exact_modes && mode & metadata::process_umask() == 0 {
            mode
        } else {
            0o600
        }
    }

    /// What is left to carry over to a copy created with `created_mode`.
    fn preserve_after_create(&self, metadata: &fs::Metadata) -> Preserve {
        Preserve {
            mode: self.preserve.mode && self.created_mode(metadata) == 0o600,
            ..self.preserve
        }
    }
}

/// Where one file and its copy are: by path, and relative to their run's
/// directories when it has them open.
#[derive(Clone, Copy)]
struct FileAt<'a> {
    source: &'a Path,
    copy: &'a Path,
    dirs: Option<&'a RunDirs>,
}

impl FileAt<'_> {
    fn name(path: &Path) -> &Path {
        Path::new(path.file_name().unwrap_or(path.as_os_str()))
    }

    fn open_source(&self) -> io::Result<File> {
        match self.dirs {
            Some(dirs) => open_source_at(dirs.source.as_fd(), Self::name(self.source)),
            None => open_nofollow(self.source),
        }
    }

    /// Creates the copy, which must not exist yet.
    fn create_copy(&self, metadata: &fs::Metadata) -> io::Result<File> {
        match self.dirs {
            Some(dirs) => {
                let flags = rustix::fs::OFlags::WRONLY
                    | rustix::fs::OFlags::CREATE
                    | rustix::fs::OFlags::EXCL
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC;
                let mode = rustix::fs::Mode::from_raw_mode(dirs.created_mode(metadata));
                let fd = rustix::fs::openat(&dirs.copy, Self::name(self.copy), flags, mode)?;
                Ok(File::from(fd))
            }
            // New files are private until complete; the final mode comes last.
            None => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(self.copy),
        }
    }
}

/// Makes `copy` anew as what `source` is: a symlink to the same target, or
/// a FIFO, socket or device node of the same kind (and device number),
/// with the mode the copy of a file would get (`metadata::copy_mode`, no
/// setuid bits; the umask applies until the metadata is carried over).
/// Whether a device node may be made is the kernel's call: it needs
/// CAP_MKNOD, which an unprivileged job's thread does not have.
fn make_node(entry: &Entry, source: &Path, copy: &Path) -> Result<()> {
    if entry.kind == EntryKind::Symlink {
        let link = fs::read_link(source)
            .map_err(|err| EngineError::io("read symlink", source, &err).of_one_source_file())?;
        return std::os::unix::fs::symlink(&link, copy)
            .map_err(|err| EngineError::io("create symlink", copy, &err));
    }
    let metadata = &entry.metadata;
    let file_type = rustix::fs::FileType::from_raw_mode(metadata.mode());
    let what = match file_type {
        rustix::fs::FileType::Fifo => "create FIFO",
        rustix::fs::FileType::Socket => "create socket",
        _ => "create device node",
    };
    let mode = rustix::fs::Mode::from_raw_mode(metadata::copy_mode(metadata) & 0o777);
    rustix::fs::mknodat(rustix::fs::CWD, copy, file_type, mode, metadata.rdev())
        .map_err(|errno| EngineError::io(what, copy, &errno.into()).of_one_source_file())
}

/// A tree's directories by depth (the root's level first), in walk order
/// within a level.
fn directory_levels(entries: &[Entry]) -> Vec<Vec<&Entry>> {
    let mut levels: Vec<Vec<&Entry>> = Vec::new();
    for entry in entries.iter().filter(|e| e.kind == EntryKind::Directory) {
        let depth = entry.relative.components().count();
        if levels.len() <= depth {
            levels.resize_with(depth + 1, Vec::new);
        }
        levels[depth].push(entry);
    }
    levels.retain(|level| !level.is_empty());
    levels
}

/// Whether a file may have holes worth looking for: fewer blocks than bytes
/// (or inline data); else the whole file is data, as cp judges.
fn maybe_sparse(metadata: &fs::Metadata) -> bool {
    metadata.blocks() * 512 < metadata.len()
}

/// Opens a directory to name entries relative to it.
fn open_directory(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::NOFOLLOW).bits() as i32)
        .open(path)
}

/// `extents` from `start` on, cut into pieces of at most `size` bytes.
fn pieces_of(extents: &[std::ops::Range<u64>], start: u64, size: u64) -> Vec<std::ops::Range<u64>> {
    let mut pieces = Vec::new();
    for extent in extents {
        let mut position = extent.start.max(start);
        while position < extent.end {
            let end = extent.end.min(position + size);
            pieces.push(position..end);
            position = end;
        }
    }
    pieces
}

/// Starts writing `range` of `copy` back to its device without waiting,
/// so the closing fdatasync or syncfs finds little left to write: the disk
/// works while the copy goes on. (POSIX_FADV_DONTNEED starts writeback of
/// dirty pages and drops the clean ones: a copy's pages are not wanted in
/// the cache. A no-op where there is no writeback, as on tmpfs.)
fn start_writeback(copy: &File, range: &std::ops::Range<u64>) {
    if let Some(len) = std::num::NonZeroU64::new(range.end - range.start) {
        let _ = rustix::fs::fadvise(copy, range.start, Some(len), rustix::fs::Advice::DontNeed);
    }
}

/// What `copy_data` needs to know of a file beyond its open descriptors.
#[derive(Clone, Copy)]
struct FileFacts {
    /// Its copy will be synced to disk once complete.
    synced: bool,
    /// The source's device (from the walk).
    device: u64,
    /// Whether the source may have holes worth looking for.
    maybe_sparse: bool,
}

/// What the engines found unsupported in one transfer, by source device
/// (the copies' device is one for all: every item is built in the
/// destination's directory): "not supported here" belongs to the pair of
/// file systems, so a tree of many files, or many lone files, asks once
/// instead of once per file. Only a cost: a skipped engine would only have
/// said no again.
#[derive(Default)]
struct KnownUnsupported {
    by_device: std::sync::Mutex<std::collections::HashMap<u64, Skips>>,
    /// Whether the file system of a source device reports file sizes that
    /// are not their contents' (see `sizes_untrusted`), asked once each.
    untrusted_sizes: std::sync::Mutex<std::collections::HashMap<u64, bool>>,
}

#[derive(Default, Clone, Copy)]
struct Skips {
    /// Sharing extents failed as unsupported by the file systems.
    no_clone: bool,
    /// The first this many byte movers could not copy here.
    movers: usize,
}

impl KnownUnsupported {
    fn get(&self, device: u64) -> Skips {
        self.by_device
            .lock()
            .unwrap()
            .get(&device)
            .copied()
            .unwrap_or_default()
    }

    fn no_clone(&self, device: u64) {
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
    fn sizes_untrusted(&self, device: u64, file: &File) -> bool {
        let mut known = self.untrusted_sizes.lock().unwrap();
        *known.entry(device).or_insert_with(|| {
            rustix::fs::fstatfs(file)
                .is_ok_and(|fs| SYNTHETIC_FILE_SYSTEMS.contains(&(fs.f_type as u64)))
        })
    }

    fn movers_skipped(&self, device: u64, skipped: usize) {
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
const SYNTHETIC_FILE_SYSTEMS: &[u64] = &[
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
fn is_unsupported_by_file_system(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::XDEV | Errno::OPNOTSUPP | Errno::NOSYS | Errno::NOTTY)
    )
}

fn is_cross_device(err: &EngineError) -> bool {
    err.is_os_error(Errno::XDEV)
}

/// The inode of a built copy at `temp`, for the journal before its rename.
fn built_identity(temp: &Path) -> Result<CopyIdentity> {
    fs::symlink_metadata(temp)
        .map(|built| CopyIdentity::of(&built))
        .map_err(|err| EngineError::io("look at", temp, &err))
}

/// What [`Transfer::look_at_target`] found at an item's target.
enum AtTarget {
    /// Nothing, or the old target on-conflict overwrite replaces.
    Free,
    /// The item's copy, placed by an earlier run.
    Placed,
    /// Something this job cannot prove it made.
    Foreign,
}

/// An open source file and the identity the walk saw at its path.
struct OpenedSource<'a> {
    file: &'a File,
    path: &'a Path,
    walked: FileIdentity,
    /// Whether the open file is the walked one, unchanged (asked once).
    is_walked: std::sync::OnceLock<bool>,
}

impl OpenedSource<'_> {
    fn is_walked(&self) -> Result<bool> {
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
struct OffsetCommits<'a> {
    journal: &'a dyn Journal,
    index: usize,
    relative: &'a Path,
    source: &'a OpenedSource<'a>,
    /// The offset last recorded, and when.
    committed: Mutex<(u64, std::time::Instant)>,
}

impl OffsetCommits<'_> {
    /// `offset`: everything before it has been copied (holes included).
    fn maybe_commit(&self, dst: &File, offset: u64) -> Result<()> {
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

/// The lengths of the parts a piece of a file is copied in: about
/// PIECE_TIME of the rate measured on the parts before (at first, of the
/// rate limit, if any), at least MIN_PIECE, at most SEGMENT, growing at most
/// twofold a part. Parts end on MIN_PIECE boundaries where they can, as
/// whole blocks suit copy_file_range's offloads and reflinks.
struct Pace {
    next: u64,
}

impl Pace {
    fn new(rate_limit: u64) -> Self {
        let first = match rate_limit {
            0 => FIRST_PIECE,
            rate => (rate as f64 * PIECE_TIME.as_secs_f64()) as u64,
        };
        Pace {
            next: first.clamp(MIN_PIECE, SEGMENT),
        }
    }

    /// Where the part starting at `at` of a piece ending at `end` ends.
    fn end_of_part(&self, at: u64, end: u64) -> u64 {
        let part_end = (at + self.next) / MIN_PIECE * MIN_PIECE;
        match part_end > at && part_end < end {
            true => part_end,
            false => end.min(at + self.next),
        }
    }

    /// A part of `len` bytes took `took`.
    fn took(&mut self, len: u64, took: std::time::Duration) {
        let rate = len as f64 / took.as_secs_f64().max(1e-6);
        let fits = (rate * PIECE_TIME.as_secs_f64()) as u64;
        self.next = fits
            .min(self.next.saturating_mul(2))
            .clamp(MIN_PIECE, SEGMENT);
    }
}

/// How far each of a file's pieces (in file order) is copied, when several
/// streams copy them out of order: the leading run of finished pieces,
/// and what of the first unfinished one is copied, is as far as the copy
/// is complete.
struct FinishedPieces<'a> {
    pieces: &'a [std::ops::Range<u64>],
    /// The first piece not finished, which after it are, and how far each
    /// unfinished piece is copied.
    state: Mutex<(
        usize,
        std::collections::BTreeSet<usize>,
        std::collections::HashMap<usize, u64>,
    )>,
}

impl<'a> FinishedPieces<'a> {
    fn new(pieces: &'a [std::ops::Range<u64>]) -> Self {
        FinishedPieces {
            pieces,
            state: Mutex::new(Default::default()),
        }
    }

    /// Notes piece `index` copied up to `to` (finished at its end);
    /// returns the offset before which all is copied.
    fn advance(&self, index: usize, to: u64) -> u64 {
        let mut state = self.state.lock().unwrap();
        let (first_unfinished, later, partial) = &mut *state;
        if to >= self.pieces[index].end {
            partial.remove(&index);
            later.insert(index);
        } else {
            partial.insert(index, to);
        }
        while later.remove(first_unfinished) {
            *first_unfinished += 1;
        }
        let before_first = match *first_unfinished {
            0 => 0,
            n => self.pieces[n - 1].end,
        };
        partial
            .get(first_unfinished)
            .map_or(before_first, |&to| to.max(before_first))
    }
}

/// A lone file of a group, built under its temporary name.
struct LoneFile<'i> {
    index: usize,
    item: &'i Item,
    /// The target's directory, opened before the copy.
    anchor: Arc<AnchoredDir>,
    temp: PathBuf,
    target: PathBuf,
    /// For a move, the source's directory, opened before the copy.
    source_dir: Option<Arc<AnchoredDir>>,
}

/// The directories a group of lone files was copied from and to, each
/// opened once: the files of `copy *.jpg dir/` share one of each.
#[derive(Default)]
struct OpenDirs(Vec<Arc<AnchoredDir>>);

impl OpenDirs {
    fn open(&mut self, path: &Path) -> Result<Arc<AnchoredDir>> {
        if let Some(dir) = self.0.iter().find(|dir| dir.path == path) {
            return Ok(Arc::clone(dir));
        }
        let dir = Arc::new(AnchoredDir::open(path)?);
        self.0.push(Arc::clone(&dir));
        Ok(dir)
    }
}

/// Syncs the file system of each directory, each file system once.
/// (A group's files mostly share one directory: each directory is looked
/// at once, not once per file.)
fn sync_each_file_system<'d>(dirs: impl Iterator<Item = &'d AnchoredDir>) -> Result<()> {
    let (mut seen, mut synced): (Vec<&Path>, Vec<u64>) = (Vec::new(), Vec::new());
    for dir in dirs {
        if seen.contains(&dir.path.as_path()) {
            continue;
        }
        seen.push(&dir.path);
        let device = dir.device()?;
        if !synced.contains(&device) {
            dir.sync_file_system()?;
            synced.push(device);
        }
    }
    Ok(())
}

/// Fsyncs each directory once, however often it comes.
fn sync_each_directory<'d>(dirs: impl Iterator<Item = &'d AnchoredDir>) -> Result<()> {
    let mut synced: Vec<&Path> = Vec::new();
    for dir in dirs {
        if !synced.contains(&dir.path.as_path()) {
            dir.sync()?;
            synced.push(&dir.path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_complete_up_to_the_first_unfinished_piece() {
        // Data at 0..10, 20..30 (a hole between), 30..40, 40..45.
        let pieces = [0..10, 20..30, 30..40, 40..45];
        let finished = FinishedPieces::new(&pieces);
        assert_eq!(finished.advance(1, 30), 0, "piece 0 is still being copied");
        assert_eq!(finished.advance(3, 45), 0);
        assert_eq!(finished.advance(0, 4), 4, "piece 0 partly copied");
        assert_eq!(finished.advance(0, 10), 30, "0 and 1 done: the hole too");
        assert_eq!(finished.advance(2, 35), 35, "piece 2 partly copied");
        assert_eq!(finished.advance(2, 40), 45);
    }
}
