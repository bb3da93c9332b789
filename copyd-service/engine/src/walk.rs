//! Walking a source into a flat list of entries, parents before children.

use std::fs::{self, Metadata};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, ErrorKind, Result};
use crate::progress::Control;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File,
    Symlink,
}

/// One thing to copy, relative to the walked root ("" is the root itself).
#[derive(Debug, Clone)]
pub struct Entry {
    pub relative: PathBuf,
    pub kind: EntryKind,
    pub metadata: Metadata,
}

/// A walked source: its entries in pre-order and their counts.
#[derive(Debug, Default)]
pub struct Tree {
    pub entries: Vec<Entry>,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

impl Tree {
    /// Entries of every kind: what a job's file counts count.
    pub fn entry_count(&self) -> u64 {
        self.entries.len() as u64
    }

    fn push(&mut self, relative: PathBuf, metadata: Metadata) -> Result<EntryKind> {
        let file_type = metadata.file_type();
        let kind = if file_type.is_symlink() {
            self.symlinks += 1;
            EntryKind::Symlink
        } else if file_type.is_dir() {
            self.directories += 1;
            EntryKind::Directory
        } else if file_type.is_file() {
            self.files += 1;
            self.bytes += metadata.len();
            EntryKind::File
        } else {
            let what = if file_type.is_fifo() {
                "FIFO"
            } else if file_type.is_socket() {
                "socket"
            } else {
                "device node"
            };
            return Err(EngineError::new(
                ErrorKind::NotSupported,
                format!(
                    "{} is a {what}; copyd copies only files, directories and symlinks",
                    relative.display()
                ),
            ));
        };
        self.entries.push(Entry {
            relative,
            kind,
            metadata,
        });
        Ok(kind)
    }
}

/// Walks `root` without following symlinks. Entries of a directory come
/// sorted by name, so two walks of one tree give one order.
pub fn walk(root: &Path, control: &Control) -> Result<Tree> {
    let mut tree = Tree::default();
    let metadata = fs::symlink_metadata(root).map_err(|err| EngineError::io("find", root, &err))?;
    if tree.push(PathBuf::new(), metadata)? != EntryKind::Directory {
        return Ok(tree);
    }
    // Depth-first with an explicit stack: deep trees must not overflow ours.
    let mut pending = vec![PathBuf::new()];
    while let Some(relative_dir) = pending.pop() {
        control.checkpoint()?;
        let dir = root.join(&relative_dir);
        let mut children: Vec<_> = fs::read_dir(&dir)
            .map_err(|err| EngineError::io("read directory", &dir, &err))?
            .collect::<std::io::Result<_>>()
            .map_err(|err| EngineError::io("read directory", &dir, &err))?;
        children.sort_by_key(|child| child.file_name());
        let mut subdirs = Vec::new();
        for child in children {
            let relative = relative_dir.join(child.file_name());
            // Looked up relative to the open directory (fstatat/statx with
            // its descriptor), not by the whole path again; symlinks are
            // not followed.
            let metadata = match child.metadata() {
                Ok(metadata) => metadata,
                // Gone between listing and looking: nothing to copy.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(EngineError::io("inspect", &child.path(), &err)),
            };
            if tree.push(relative.clone(), metadata)? == EntryKind::Directory {
                subdirs.push(relative);
            }
        }
        // Reversed onto the stack, so directories are visited in name order.
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_before_children() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a/b/f"), b"12345").unwrap();
        fs::write(dir.path().join("z"), b"1").unwrap();
        std::os::unix::fs::symlink("z", dir.path().join("link")).unwrap();
        let tree = walk(dir.path(), &Control::default()).unwrap();
        let names: Vec<_> = tree
            .entries
            .iter()
            .map(|e| e.relative.to_string_lossy().into_owned())
            .collect();
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(pos("") < pos("a") && pos("a") < pos("a/b") && pos("a/b") < pos("a/b/f"));
        assert_eq!(
            (tree.files, tree.directories, tree.symlinks, tree.bytes),
            (2, 3, 1, 6)
        );
    }
}
