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
use crate::engines::{try_chain, ByteObserver, CopyContext, EngineId, EngineSet, FileCopier};
use crate::error::{EngineError, ErrorKind, Result};
use crate::fsutil::{open_nofollow, open_source_at, under};
use crate::journal::{
    CopyIdentity, FileIdentity, GroupCommit, ItemsOnly, Journal, NoJournal, ResumeState,
    GROUP_COMMIT_INTERVAL, OFFSET_COMMIT_INTERVAL,
};
use crate::placed::Action;
use crate::progress::{Control, Progress};
use crate::request::{Conflict, Item, OnError, Operation, Preserve, Resolved};
use crate::verify::{self, Checksum, SourceDigest, Verify};
use crate::walk::{self, Entry, EntryKind, Tree};
use crate::{
    engines, fsutil, links, metadata, names, parallel, provenance, read_ahead, residency, sparse,
};

mod data;
mod file;
mod lone_files;
mod merge;
mod placement;
mod replaced;
mod tree;

use data::route;
use file::*;
use placement::*;
use tree::*;

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
    pub failures: Vec<Failure>,
    /// With a digest method of `verify`: each file copied and checked, by
    /// its final path, in no particular order.
    pub checksums: Vec<Checksum>,
}

/// A file that could not be copied while the rest went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub source: PathBuf,
    /// The final path its copy would have had.
    pub target: PathBuf,
    pub error: EngineError,
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
    /// A copy replacing a file takes its mode and owner (see `replaced`).
    keep_replaced_attributes: bool,
    verify: Verify,
    on_error: OnError,
    /// How many items the request has.
    items: usize,
    checksums: Mutex<Vec<FileChecksum>>,
    tag: &'a str,
    progress: &'a Progress,
    control: &'a Control,
    operation: Operation,
    resume: &'a ResumeState,
    journal: &'a dyn Journal,
    failures: std::sync::Mutex<Vec<Failure>>,
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
    let (cloners, mut movers): (Vec<&dyn FileCopier>, Vec<&dyn FileCopier>) = chain
        .iter()
        .partition(|engine| engine.id().capabilities().shares_extents);
    if options.verify.digests() {
        // A digest needs every byte in user space: the engines that never
        // have them there (splice, copy_file_range) are passed over.
        movers.retain(|engine| engine.id().capabilities().bytes_in_user_space);
    }
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
        keep_replaced_attributes: options.keep_replaced_attributes,
        verify: options.verify,
        on_error: options.on_error,
        items: resolved.items.len(),
        checksums: Mutex::new(Vec::new()),
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
                        transfer.fail_alone(
                            &item.source,
                            &item.target,
                            provenance::foreign_target(&item.target),
                        );
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
            match transfer.copy_whole_item(*index, item, tree) {
                Ok(()) => outcome.copied += 1,
                Err(err) if transfer.fails_alone(&err) => {
                    transfer.count_failed_item(tree);
                    transfer.fail_alone(&item.source, &item.target, err);
                }
                Err(err) => return Err(err),
            }
        }
    }
    outcome.failures = transfer.failures.into_inner().unwrap();
    outcome.checksums = transfer
        .checksums
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|file| Checksum {
            target: under(&resolved.items[file.index].target, &file.relative),
            digest: file.digest,
            shared_extents: file.shared_extents,
        })
        .collect();
    Ok(outcome)
}
