//! Hard links inside a copied tree: files that are one inode in the source
//! become one inode in the copy (with preserve links), instead of several
//! independent copies.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use crate::walk::{Entry, EntryKind};

/// For each entry, the earlier entry it is a hard link of, if any: the
/// first of a group of names of one inode is copied, the others are linked
/// to its copy. Only files with more than one link can be in a group.
pub fn plan(entries: &[Entry]) -> Vec<Option<usize>> {
    let mut first_of: HashMap<(u64, u64), usize> = HashMap::new();
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let meta = &entry.metadata;
            if entry.kind != EntryKind::File || meta.nlink() < 2 {
                return None;
            }
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
