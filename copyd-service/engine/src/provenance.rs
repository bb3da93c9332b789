//! What proves that a file at an item's temporary or final name is this
//! job's own work, and the cleanup that touches only such files.
//!
//! Recovery and cancel act on names in directories other users may write
//! to (a sticky `/tmp`, a shared project directory). A name alone proves
//! nothing: someone may have put a file there while copyd was down. So:
//!
//! - A target counts as the item's copy only if it is the inode the journal
//!   recorded (durably, with sync) just before the rename into place
//!   ([`crate::Journal::item_built`]).
//! - A temporary counts as the job's own if it is that recorded inode, or
//!   is owned by the identity the job acts as (or, when ownership is
//!   preserved, by the source's owner, whom the copy was given to). Another
//!   user cannot make a file owned by the job's user, and temporary names
//!   carry a random part per job, so they are not guessed ahead of time.
//!
//! Everything here runs on the calling thread, with its identity: the
//! daemon calls it on a thread acting as the job's caller.

use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::anchored::AnchoredDir;
use crate::error::{EngineError, ErrorKind, Result};
use crate::fsutil;
use crate::journal::{CopyIdentity, ResumeState};
use crate::request::{Item, Preserve, Resolved};

/// Whether `leftover`, found at item `index`'s temporary name, is this
/// job's own (see the module comment).
pub(crate) fn is_own_leftover(
    leftover: &Metadata,
    item: &Item,
    index: usize,
    resume: &ResumeState,
    preserve: Preserve,
) -> bool {
    if resume.built.get(&index) == Some(&CopyIdentity::of(leftover)) {
        return true;
    }
    let owner = leftover.uid();
    if owner == rustix::process::geteuid().as_raw() {
        return true;
    }
    preserve.ownership
        && fs::symlink_metadata(&item.source).is_ok_and(|source| source.uid() == owner)
}

/// Whether the file at `target` is item `index`'s copy, placed by an
/// earlier run: the inode recorded before its rename.
pub(crate) fn is_placed_copy(target: &Metadata, index: usize, resume: &ResumeState) -> bool {
    resume.built.get(&index) == Some(&CopyIdentity::of(target))
}

/// The error for a temporary name that holds something copyd did not make:
/// it is left alone, and the item fails.
pub(crate) fn foreign_temporary(temp: &Path) -> EngineError {
    EngineError::new(
        ErrorKind::AlreadyExists,
        format!(
            "{} exists and was not made by this job: left alone",
            temp.display()
        ),
    )
}

/// The error for a target that holds something copyd cannot prove is its
/// copy, where the job's on-conflict policy is fail. Only this item fails;
/// for a move, its source stays.
pub(crate) fn foreign_target(target: &Path) -> EngineError {
    let mut err = EngineError::new(
        ErrorKind::AlreadyExists,
        format!(
            "{} exists and is not this job's copy (it appeared after the job was made)",
            target.display()
        ),
    );
    err.per_file = true;
    err
}

/// Removes what earlier runs of a job (temporary names from `tag`) left of
/// its unfinished items (not in `done`), through each target's directory,
/// opened once: only leftovers that are provably the job's own. Used when an
/// interrupted job is cancelled, which no run will clean up after.
pub fn discard_leftovers(
    resolved: &Resolved,
    tag: &str,
    resume: &ResumeState,
    done: &HashSet<usize>,
) -> Result<()> {
    let preserve = resolved.request.options.preserve;
    let mut first_error = None;
    for (index, item) in resolved.items.iter().enumerate() {
        if done.contains(&index) || item.skip {
            continue;
        }
        let target_dir = item.target.parent().unwrap_or(Path::new("/"));
        let anchor = match AnchoredDir::open(target_dir) {
            Ok(anchor) => anchor,
            // No directory, no leftover in it.
            Err(err) if err.kind == ErrorKind::NotFound => continue,
            Err(err) => {
                first_error.get_or_insert(err);
                continue;
            }
        };
        let temp_name = fsutil::temp_path(&item.target, tag, index);
        let temp = anchor.join(temp_name.file_name().expect("temp names have a name"));
        let Ok(leftover) = fs::symlink_metadata(&temp) else {
            continue;
        };
        if !is_own_leftover(&leftover, item, index, resume, preserve) {
            tracing::warn!(temp = %temp_name.display(), "a file at a temporary name is not this job's: left alone");
            continue;
        }
        if let Err(err) = fsutil::remove_all(&temp) {
            first_error.get_or_insert(anchor.explain(err));
        }
    }
    first_error.map_or(Ok(()), Err)
}
