//! Hard links in a copied set: files that are one inode in the source
//! become one inode in the copy (with preserve links), instead of several
//! independent copies. Inside one tree, [`plan`] finds them from the walk;
//! across the items of a job (`cp -a a b dir/`, where a and b are one
//! file), [`PlacedCopies`] remembers the copies already in place, also
//! those an earlier run of a resumed job placed.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::Result;
use crate::progress::Control;
use crate::request::Item;
use crate::walk::{self, Entry, EntryKind};

/// For each entry, the earlier entry it is a hard link of, if any: the
/// first of a group of names of one inode is copied, the others are linked
/// to its copy. Only files with more than one link can be in a group.
pub fn plan(entries: &[Entry]) -> Vec<Option<usize>> {
    let mut first_of: HashMap<(u64, u64), usize> = HashMap::new();
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            if !has_other_names(entry) {
                return None;
            }
            let meta = &entry.metadata;
            match first_of.entry((meta.dev(), meta.ino())) {
                std::collections::hash_map::Entry::Occupied(first) => Some(*first.get()),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(index);
                    None
                }
            }
        })
        .collect()
}

/// A file whose inode has other names, which may be in the copied set.
pub fn has_other_names(entry: &Entry) -> bool {
    entry.kind == EntryKind::File && entry.metadata.nlink() > 1
}

/// Copies already in place (under their final names) of files with other
/// names, by source inode, for the later items of the same job.
#[derive(Default)]
pub struct PlacedCopies(Mutex<HashMap<(u64, u64), Placed>>);

/// Where a copy is, and which inode it was when placed.
struct Placed {
    path: PathBuf,
    identity: (u64, u64),
}

impl PlacedCopies {
    /// Remembers the copies of an item's `entries` placed under `target`
    /// (one lstat for each file with other names). Only a regular file of
    /// the source's size counts as its copy: after a restart, what an
    /// earlier run placed may have been replaced since.
    pub fn remember(&self, entries: &[Entry], target: &Path) {
        let mut placed = self.0.lock().unwrap();
        for entry in entries.iter().filter(|e| has_other_names(e)) {
            let source = (entry.metadata.dev(), entry.metadata.ino());
            if placed.contains_key(&source) {
                continue;
            }
            let path = crate::fsutil::under(target, entry.copy_relative());
            match fs::symlink_metadata(&path) {
                Ok(copy) if copy.is_file() && copy.len() == entry.metadata.len() => {
                    let identity = (copy.dev(), copy.ino());
                    placed.insert(source, Placed { path, identity });
                }
                _ => {}
            }
        }
    }

    /// Remembers the copies of `items`, which an earlier run of a resumed
    /// job put in place, by walking their sources again. A source that can
    /// no longer be walked (a moved one is gone) is passed over: later names
    /// of its files are copied, not linked.
    pub fn remember_earlier(
        &self,
        items: &[&Item],
        control: &Control,
        rename: Option<&crate::names::Rename>,
    ) -> Result<()> {
        for item in items {
            control.checkpoint()?;
            if let Ok(mut tree) = walk::walk(&item.source, control) {
                // Named as the earlier run named them.
                if crate::names::name_entries(&mut tree, &item.source, rename).is_ok() {
                    self.remember(&tree.entries, &item.target);
                }
            }
        }
        Ok(())
    }

    /// Whether a copy of `entry`'s inode is remembered (a later name of it
    /// is to be linked to that copy).
    pub fn knows(&self, entry: &Entry) -> bool {
        let source = (entry.metadata.dev(), entry.metadata.ino());
        self.0.lock().unwrap().contains_key(&source)
    }

    /// Whether `existing` is the remembered copy of `entry`'s inode (then
    /// the name already is that file: nothing to do).
    pub fn is_copy(&self, entry: &Entry, existing: &fs::Metadata) -> bool {
        let source = (entry.metadata.dev(), entry.metadata.ino());
        self.0
            .lock()
            .unwrap()
            .get(&source)
            .is_some_and(|placed| placed.identity == (existing.dev(), existing.ino()))
    }

    /// Makes `copy` a hard link of the placed copy of `entry`'s inode.
    /// False when there is none, or it cannot be linked (another file
    /// system) or is no longer that copy (replaced since): then `entry` is
    /// copied as usual, and nothing was left at `copy`.
    pub fn link(&self, entry: &Entry, copy: &Path) -> bool {
        let source = (entry.metadata.dev(), entry.metadata.ino());
        let Some((path, identity)) = self
            .0
            .lock()
            .unwrap()
            .get(&source)
            .map(|placed| (placed.path.clone(), placed.identity))
        else {
            return false;
        };
        if fs::hard_link(&path, copy).is_err() {
            return false;
        }
        match fs::symlink_metadata(copy) {
            Ok(linked) if (linked.dev(), linked.ino()) == identity => true,
            _ => {
                let _ = fs::remove_file(copy);
                false
            }
        }
    }
}
