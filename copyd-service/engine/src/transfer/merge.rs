//! Copying an item into what already stands at its target, entry by entry,
//! under the job's on-conflict policy: `cp -r` into an existing directory
//! (the files only the destination has stay), `cp -n`, `cp -u`,
//! `cp --backup=simple`, and a file manager's "keep both".
//!
//! Each file (or symlink, or special file) is built alone under a
//! temporary name beside its final one, made durable (with sync), and only
//! then placed, so every file under a final name is whole. Directories
//! that do not exist are made in place; they get their metadata last,
//! deepest first. Every directory is reached through the one above it,
//! opened without following symlinks, so a symlink swapped into the
//! destination meanwhile leads nowhere.
//!
//! A merge is not carried on from partial work after a crash: it is redone,
//! and a file that stands at its name with the source's size and
//! modification time (what a copy that keeps times leaves) counts as
//! placed by the earlier run, so a resumed `rename` or `backup` neither
//! doubles nor backs up its own copies.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{RenameFlags, CWD};
use rustix::io::Errno;

use super::{under, AnchoredDir, Transfer};
use crate::conflict::{ConflictDecision, Side};
use crate::error::{EngineError, Result};
use crate::metadata;
use crate::placed::Action;
use crate::request::{Conflict, Item};
use crate::walk::{Entry, EntryKind, Tree};

/// How many `name (N)` a keep-both placement tries before it gives up.
const KEEP_BOTH_TRIES: u32 = 10_000;

/// How a merge ended.
pub(super) enum Merged {
    /// Every entry placed.
    Whole,
    /// Some entries were left as the destination had them (the policy
    /// said so): a move keeps its source.
    WithSkips,
}

/// Where a built entry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placing {
    /// Nothing stands there (RENAME_NOREPLACE: nothing may appear meanwhile).
    New,
    /// Over what stands there, atomically.
    Over,
    /// What stands there moves to `name~` first.
    AfterBackup,
    /// Beside it, as `name (N)`.
    Beside,
}

/// Where a decision puts the incoming entry; None: nowhere (skipped).
fn placing_for(decision: ConflictDecision) -> Option<Placing> {
    match decision {
        ConflictDecision::Skipped => None,
        ConflictDecision::Overwritten | ConflictDecision::Updated => Some(Placing::Over),
        ConflictDecision::BackedUp => Some(Placing::AfterBackup),
        ConflictDecision::Renamed => Some(Placing::Beside),
    }
}

/// Whether `existing` looks like the copy of `entry` an earlier run of
/// this job placed: a regular file of its size and modification time.
fn looks_placed(entry: &Entry, existing: &fs::Metadata) -> bool {
    entry.kind == EntryKind::File
        && existing.is_file()
        && existing.len() == entry.metadata.len()
        && (existing.mtime(), existing.mtime_nsec())
            == (entry.metadata.mtime(), entry.metadata.mtime_nsec())
}

/// `name (n)` before the extension: `report (1).pdf`, `notes (2)`,
/// `.bashrc (1)`.
fn numbered(name: &OsStr, n: u32) -> OsString {
    let bytes = name.as_bytes();
    let dot = bytes.iter().rposition(|&b| b == b'.').filter(|&at| at > 0);
    let (stem, extension) = bytes.split_at(dot.unwrap_or(bytes.len()));
    let mut out = stem.to_vec();
    out.extend_from_slice(format!(" ({n})").as_bytes());
    out.extend_from_slice(extension);
    OsString::from_vec(out)
}

/// The temporary name of entry `relative` of item `index`: stable across
/// runs (a hash of its path, not its place in a walk), so a resumed merge
/// finds its own leftovers.
fn temp_name(tag: &str, index: usize, relative: &Path) -> OsString {
    // FNV-1a, 64 bits: stable across builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in relative.as_os_str().as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    OsString::from(format!(".copyd-{tag}-{index}-{hash:016x}.tmp"))
}

fn rename_at(from: &Path, to: &Path, flags: RenameFlags) -> Result<()> {
    rustix::fs::renameat_with(CWD, from, CWD, to, flags)
        .map_err(|errno| EngineError::io("rename into place", to, &errno.into()))
}

impl Transfer<'_> {
    /// Copies `item` (walked as `tree`) into what stands at its target,
    /// entry by entry, under `policy`. Entries that cannot be placed (a
    /// file where a directory goes, or the reverse; an unreadable source)
    /// fail alone, listed with the job's failed files.
    pub(super) fn merge_item(
        &self,
        index: usize,
        item: &Item,
        tree: &Tree,
        policy: Conflict,
    ) -> Result<Merged> {
        // Ask's "apply to all" answer becomes the policy from then on.
        let mut policy = policy;
        let failures_before = self.failures.lock().unwrap().len();
        let top = Arc::new(AnchoredDir::open(super::parent_of(&item.target))?);
        let top_name = item.target.file_name().unwrap_or(item.target.as_os_str());
        // Copy-relative directory → the directory, opened.
        let mut dirs: HashMap<PathBuf, Arc<AnchoredDir>> = HashMap::new();
        // Directories made here, in walk order, for their metadata at the end.
        let mut made: Vec<(&Entry, PathBuf, PathBuf)> = Vec::new();
        let mut skipped = false;
        for entry in &tree.entries {
            self.control.checkpoint()?;
            let source = under(&item.source, &entry.relative);
            let copy_relative = entry.copy_relative();
            let (parent, name) = if copy_relative.as_os_str().is_empty() {
                (Arc::clone(&top), top_name.to_owned())
            } else {
                let parent_relative = copy_relative.parent().unwrap_or(Path::new(""));
                match dirs.get(parent_relative) {
                    Some(parent) => (
                        Arc::clone(parent),
                        copy_relative.file_name().unwrap_or_default().to_owned(),
                    ),
                    // Its directory could not be merged: nor can it.
                    None => {
                        self.progress.add_bytes_uncopied(entry.metadata.len());
                        self.progress.add_files_done(1);
                        continue;
                    }
                }
            };
            let at = parent.join(&name);
            let existing = fs::symlink_metadata(&at).ok();
            if entry.kind == EntryKind::Directory {
                let opened = self.merge_directory(entry, &parent, &name, existing.as_ref(), policy);
                match opened {
                    Ok((dir, path, new)) => {
                        // Listed as cp lists a directory merged into, by
                        // its path (not the open directory's).
                        let target = under(&item.target, copy_relative);
                        (self.progress.placed()).note(Action::Copied, true, &source, &target);
                        if new {
                            made.push((entry, source, path));
                        }
                        dirs.insert(copy_relative.to_path_buf(), dir);
                    }
                    Err(err) if err.per_file => {
                        self.fail_entry_alone(source, under(&item.target, copy_relative), err)
                    }
                    Err(err) => return Err(parent.explain(err)),
                }
                self.progress.add_files_done(1);
                continue;
            }
            // Another name of a file already in the copy (preserve links):
            // linked to that copy whatever stands at the name and whatever
            // the policy says of it, as cp -a keeps names of one file one
            // file, also with -u (GNU's preserve-link.sh).
            let later_name = self.preserve.links
                && crate::links::has_other_names(entry)
                && self.placed.knows(entry);
            if later_name
                && existing
                    .as_ref()
                    .is_some_and(|e| self.placed.is_copy(entry, e))
            {
                // Already that file (a rename onto it would do nothing and
                // leave the temporary).
                self.progress.add_bytes_uncopied(entry.metadata.len());
                self.progress.add_files_done(1);
                continue;
            }
            // Some(None): the name is free. Some(decision): the policy's
            // decision for a taken name. None: not placed (failed alone, or
            // placed by an earlier run).
            let decision = match &existing {
                None => Some(None),
                Some(existing) if later_name && !existing.is_dir() => {
                    Some(Some(ConflictDecision::Overwritten))
                }
                Some(existing) if self.resume.resuming && looks_placed(entry, existing) => None,
                // Keep-both puts a file beside a directory; nothing else can.
                // Under skip, or asked and answered skip, the file is left
                // out, as cp -n and cp -i's "n" leave it.
                Some(existing) if existing.is_dir() && policy != Conflict::Rename => {
                    let skip = match policy {
                        Conflict::Skip => true,
                        Conflict::Ask => {
                            let answer = self.control.ask(
                                under(&item.target, copy_relative),
                                Side::of(existing),
                                Side::of(&entry.metadata),
                            )?;
                            if answer.apply_to_all {
                                policy = answer.action;
                            }
                            answer.action == Conflict::Skip
                        }
                        _ => false,
                    };
                    match skip {
                        true => Some(Some(ConflictDecision::Skipped)),
                        false => {
                            self.fail_entry_alone(
                                source.clone(),
                                under(&item.target, copy_relative),
                                taken_by_directory(&item.target, copy_relative),
                            );
                            None
                        }
                    }
                }
                Some(existing) if policy == Conflict::Ask => {
                    let answer = self.control.ask(
                        under(&item.target, copy_relative),
                        Side::of(existing),
                        Side::of(&entry.metadata),
                    )?;
                    if answer.apply_to_all {
                        policy = answer.action;
                    }
                    answer.action.decide(&entry.metadata, existing).map(Some)
                }
                Some(existing) => policy.decide(&entry.metadata, existing).map(Some),
            };
            let placing = match decision {
                Some(None) => Some(Placing::New),
                Some(Some(decision)) => placing_for(decision),
                None => None,
            };
            // What stands at a name of a file with other names, or its copy
            // once placed, is the copy later names are linked to.
            let remember = || {
                if self.preserve.links && crate::links::has_other_names(entry) {
                    self.placed
                        .remember(std::slice::from_ref(entry), &item.target);
                }
            };
            let Some(placing) = placing else {
                if let Some(Some(decision)) = decision {
                    skipped = true;
                    self.progress.note_conflict(decision);
                    remember();
                }
                self.progress.add_bytes_uncopied(entry.metadata.len());
                self.progress.add_files_done(1);
                continue;
            };
            match self.merge_file(index, item, entry, &source, &parent, &name, placing) {
                Ok(()) => {
                    if let Some(Some(decision)) = decision {
                        self.progress.note_conflict(decision);
                    }
                    let target = under(&item.target, copy_relative);
                    (self.progress.placed()).note(Action::Copied, false, &source, &target);
                    remember();
                }
                Err(err) if err.per_file => {
                    self.fail_entry_alone(source, under(&item.target, copy_relative), err)
                }
                Err(err) => return Err(parent.explain(err)),
            }
        }
        // Deepest first: a directory whose mode shuts its owner out gets it
        // after everything below it.
        for (entry, source, copy) in made.iter().rev() {
            metadata::carry_path_metadata(Some(source), copy, &entry.metadata, &self.preserve)?;
        }
        if self.sync {
            for dir in dirs.values() {
                dir.sync()?;
            }
            top.sync()?;
        }
        let whole = self.failures.lock().unwrap().len() == failures_before;
        if self.is_move() && whole && !skipped {
            // Every file is placed, durable: the source may go.
            super::remove_moved_source(item)?;
            self.progress.placed().note_removed_tree(&item.source, tree);
        }
        self.journal.item_done(index);
        Ok(match whole && !skipped {
            true => Merged::Whole,
            false => Merged::WithSkips,
        })
    }

    /// Opens, or makes, the directory for `entry` at `name` in `parent`.
    /// Returns it, its path, and whether it was made now.
    fn merge_directory(
        &self,
        entry: &Entry,
        parent: &AnchoredDir,
        name: &OsStr,
        existing: Option<&fs::Metadata>,
        policy: Conflict,
    ) -> Result<(Arc<AnchoredDir>, PathBuf, bool)> {
        let mut name = name.to_owned();
        match existing {
            // Directories merge under every policy; keep-both applies to
            // what cannot merge.
            Some(existing) if existing.is_dir() => {
                let path = parent.join(&name);
                return Ok((Arc::new(AnchoredDir::open_nofollow(&path)?), path, false));
            }
            Some(existing) if !existing.is_dir() && policy != Conflict::Rename => {
                let mut err = EngineError::new(
                    crate::ErrorKind::AlreadyExists,
                    format!(
                        "{} is not a directory: {} cannot be merged into it",
                        parent.join(&name).display(),
                        entry.relative.display()
                    ),
                );
                err.per_file = true;
                return Err(err);
            }
            _ => {}
        }
        // Made anew: beside what stands there, with keep-both.
        let mut n = 0;
        loop {
            let path = parent.join(&name);
            // Private until its metadata comes, at the end.
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    return Ok((Arc::new(AnchoredDir::open_nofollow(&path)?), path, true));
                }
                Err(err)
                    if err.kind() == io::ErrorKind::AlreadyExists
                        && policy == Conflict::Rename
                        && n < KEEP_BOTH_TRIES =>
                {
                    n += 1;
                    name = numbered(entry.relative.file_name().unwrap_or(&name), n);
                }
                Err(err) => return Err(EngineError::io("create directory", &path, &err)),
            }
        }
    }

    /// Builds one entry under its temporary name in `parent` and places it
    /// at `name` as `placing` says.
    #[allow(clippy::too_many_arguments)]
    fn merge_file(
        &self,
        index: usize,
        item: &Item,
        entry: &Entry,
        source: &Path,
        parent: &AnchoredDir,
        name: &OsStr,
        placing: Placing,
    ) -> Result<()> {
        let temp = parent.join(&temp_name(self.tag, index, &entry.relative));
        let at = parent.join(name);
        self.clear_leftover(&temp, item, index)?;
        // The entry as an item of its own: its bytes, metadata and (with
        // sync) fdatasync, as a lone file gets them.
        let alone = Item {
            source: source.to_path_buf(),
            target: at.clone(),
            kind: entry.kind,
            skip: false,
            replace: false,
            merge: false,
        };
        let one = Tree {
            entries: vec![Entry {
                relative: PathBuf::new(),
                target: None,
                kind: entry.kind,
                metadata: entry.metadata.clone(),
            }],
            ..Tree::default()
        };
        let placed = self
            .build(&alone, index, &one, &temp, false, self.sync)
            .and_then(|()| match placing {
                Placing::New => rename_at(&temp, &at, RenameFlags::NOREPLACE),
                Placing::Over => {
                    self.take_replaced_attributes(&temp, &at)?;
                    rename_at(&temp, &at, RenameFlags::empty())
                }
                Placing::AfterBackup => {
                    let mut backup = name.to_owned();
                    backup.push("~");
                    rename_at(&at, &parent.join(&backup), RenameFlags::empty())?;
                    rename_at(&temp, &at, RenameFlags::NOREPLACE)
                }
                Placing::Beside => self.place_beside(&temp, parent, entry, name),
            });
        if let Err(mut err) = placed {
            self.discard(&temp);
            // A name taken meanwhile: this entry fails, the merge goes on.
            err.per_file |= err.is_os_error(Errno::EXIST);
            return Err(err);
        }
        Ok(())
    }

    /// Places `temp` at the first free `name (N)` in `parent`, claimed
    /// with RENAME_NOREPLACE: a name someone takes meanwhile is passed
    /// over, never replaced.
    fn place_beside(
        &self,
        temp: &Path,
        parent: &AnchoredDir,
        entry: &Entry,
        name: &OsStr,
    ) -> Result<()> {
        let base = entry.copy_relative().file_name().unwrap_or(name);
        for n in 1..=KEEP_BOTH_TRIES {
            let candidate = parent.join(&numbered(base, n));
            match rustix::fs::renameat_with(CWD, temp, CWD, &candidate, RenameFlags::NOREPLACE) {
                Ok(()) => return Ok(()),
                Err(Errno::EXIST) => continue,
                Err(errno) => {
                    return Err(EngineError::io(
                        "rename into place",
                        &candidate,
                        &errno.into(),
                    ))
                }
            }
        }
        Err(EngineError::new(
            crate::ErrorKind::AlreadyExists,
            format!(
                "{} and {KEEP_BOTH_TRIES} numbered names beside it exist",
                parent.join(name).display()
            ),
        ))
    }

    fn fail_entry_alone(&self, source: PathBuf, target: PathBuf, mut err: EngineError) {
        err.per_file = true;
        self.fail_alone(&source, &target, err);
    }
}

fn taken_by_directory(target: &Path, copy_relative: &Path) -> EngineError {
    let mut err = EngineError::new(
        crate::ErrorKind::AlreadyExists,
        format!(
            "{} is a directory: a file cannot be put in its place",
            under(target, copy_relative).display()
        ),
    );
    err.per_file = true;
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names_keep_the_extension() {
        let n = |name: &str, k| numbered(OsStr::new(name), k).into_string().unwrap();
        assert_eq!(n("report.pdf", 1), "report (1).pdf");
        assert_eq!(n("notes", 2), "notes (2)");
        assert_eq!(n(".bashrc", 1), ".bashrc (1)");
        assert_eq!(n("a.tar.gz", 3), "a.tar (3).gz");
    }

    #[test]
    fn temporary_names_are_copyd_temporaries_and_stable() {
        let a = temp_name("1-ab", 0, Path::new("d/f"));
        assert!(crate::fsutil::is_temp_name(&a));
        assert_eq!(a, temp_name("1-ab", 0, Path::new("d/f")));
        assert_ne!(a, temp_name("1-ab", 0, Path::new("d/g")));
    }
}
