//! What to do where a target exists: the policies, what a job did with
//! each conflict, and the question a job with `ask` waits on.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// What to do when a target already exists. Inside a directory that
/// exists, each file is judged on its own (see `transfer::merge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Conflict {
    /// Refuse the request before anything is written.
    #[default]
    Fail,
    /// Keep what exists (cp -n); directories are merged.
    Skip,
    /// Replace a file atomically; merge a directory, keeping the files only
    /// the destination has (cp -r).
    Overwrite,
    /// Replace a file only when the source is newer (cp -u).
    Update,
    /// Keep both: the copy becomes `name (1).ext`, `name (2).ext`…
    /// (directories merge).
    Rename,
    /// Move the existing file to `name~` first (cp --backup=simple).
    Backup,
    /// Ask the job's owner, conflict by conflict ([`ConflictQuestion`]).
    Ask,
}

impl Conflict {
    /// Every policy and its name: the one table of them.
    pub const NAMES: [(Conflict, &'static str); 7] = [
        (Conflict::Fail, "fail"),
        (Conflict::Skip, "skip"),
        (Conflict::Overwrite, "overwrite"),
        (Conflict::Update, "update"),
        (Conflict::Rename, "rename"),
        (Conflict::Backup, "backup"),
        (Conflict::Ask, "ask"),
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(conflict, _)| *conflict)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(conflict, _)| *conflict == self)
            .map_or("fail", |(_, name)| name)
    }

    /// The names, for messages: "fail, skip, …".
    pub fn known() -> String {
        Self::NAMES.map(|(_, name)| name).join(", ")
    }
}

/// What on-conflict did with a target it found taken (the keys of
/// [`crate::Progress::conflicts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictDecision {
    Skipped,
    Overwritten,
    Updated,
    Renamed,
    BackedUp,
}

impl ConflictDecision {
    pub fn name(self) -> &'static str {
        match self {
            ConflictDecision::Skipped => "skipped",
            ConflictDecision::Overwritten => "overwritten",
            ConflictDecision::Updated => "updated",
            ConflictDecision::Renamed => "renamed",
            ConflictDecision::BackedUp => "backed-up",
        }
    }
}

impl Conflict {
    /// What this policy does with an incoming file whose name is taken by
    /// `existing`: the one rule, for the merge and the dry run. None for
    /// fail (refused before) and ask (the owner decides).
    pub fn decide(self, incoming: &Metadata, existing: &Metadata) -> Option<ConflictDecision> {
        match self {
            Conflict::Fail | Conflict::Ask => None,
            Conflict::Skip => Some(ConflictDecision::Skipped),
            Conflict::Overwrite => Some(ConflictDecision::Overwritten),
            Conflict::Update => Some(match is_newer(incoming, existing) {
                true => ConflictDecision::Updated,
                false => ConflictDecision::Skipped,
            }),
            Conflict::Rename => Some(ConflictDecision::Renamed),
            Conflict::Backup => Some(ConflictDecision::BackedUp),
        }
    }
}

/// Whether `incoming` was modified after `existing` (cp -u's test).
fn is_newer(incoming: &Metadata, existing: &Metadata) -> bool {
    (incoming.mtime(), incoming.mtime_nsec()) > (existing.mtime(), existing.mtime_nsec())
}

/// One side of a conflict, as the owner is shown it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// "file", "directory", "symlink" or "special".
    pub kind: &'static str,
    pub size: u64,
    /// Modification time, µs since the epoch.
    pub mtime_us: u64,
}

impl Side {
    pub fn of(metadata: &Metadata) -> Side {
        let file_type = metadata.file_type();
        let kind = if file_type.is_dir() {
            "directory"
        } else if file_type.is_file() {
            "file"
        } else if file_type.is_symlink() {
            "symlink"
        } else {
            "special"
        };
        let mtime_us = (metadata.mtime().max(0) as u64) * 1_000_000
            + (metadata.mtime_nsec().max(0) as u64) / 1_000;
        Side {
            kind,
            size: metadata.len(),
            mtime_us,
        }
    }
}

/// A conflict a job with on-conflict `ask` waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictQuestion {
    /// Numbers the questions of one job, from 1.
    pub id: u64,
    pub target: PathBuf,
    pub existing: Side,
    pub incoming: Side,
}

/// The owner's answer: what to do with this conflict (skip, overwrite,
/// update, rename or backup), and whether with every later one too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictAnswer {
    pub action: Conflict,
    pub apply_to_all: bool,
}

impl ConflictAnswer {
    /// Parses an answer as ResolveConflict takes it.
    pub fn parse(action: &str, apply_to_all: bool) -> Option<ConflictAnswer> {
        match Conflict::parse(action)? {
            Conflict::Fail | Conflict::Ask => None,
            action => Some(ConflictAnswer {
                action,
                apply_to_all,
            }),
        }
    }
}
