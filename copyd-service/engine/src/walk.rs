//! Walking a source into a flat list of entries, parents before children.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use crate::error::{EngineError, Result};
use crate::progress::Control;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File,
    Symlink,
    /// A FIFO, a socket or a device node: made anew in the copy (as `cp -a`
    /// and `rsync -a` do), never opened.
    Special,
}

/// One thing to copy, relative to the walked root ("" is the root itself).
#[derive(Debug, Clone)]
pub struct Entry {
    pub relative: PathBuf,
    /// Its path relative to the item's copy when a rename rule changed it
    /// (see `names`); None: the same as `relative`.
    pub target: Option<PathBuf>,
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
    pub specials: u64,
    pub bytes: u64,
}

impl Entry {
    /// The entry's directory, as `relative.parent()` gives it ("" for
    /// the root's children), found by its last '/'. A walked path is names
    /// joined by single slashes, so that is where its parent ends; parsing
    /// components from the back, as `Path::parent` does, was a tenth of the
    /// workers' instructions on small files (callgrind).
    pub fn directory(&self) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        let bytes = self.relative.as_os_str().as_bytes();
        let end = bytes.iter().rposition(|&b| b == b'/').unwrap_or(0);
        std::ffi::OsStr::from_bytes(&bytes[..end])
    }
}

impl Tree {
    /// Entries of every kind: what a job's file counts count.
    pub fn entry_count(&self) -> u64 {
        self.entries.len() as u64
    }

    fn push(&mut self, relative: PathBuf, metadata: Metadata) -> EntryKind {
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
            self.specials += 1;
            EntryKind::Special
        };
        self.entries.push(Entry {
            target: None,
            relative,
            kind,
            metadata,
        });
        kind
    }
}

/// Walks `root` without following symlinks. Entries of a directory come
/// sorted by name, so two walks of one tree give one order: the order of a
/// serial depth-first walk, though directories are listed on several
/// threads at once (a tree of many small files is mostly `statx` calls,
/// which two CPUs do in half the time).
pub fn walk(root: &Path, control: &Control) -> Result<Tree> {
    let mut tree = Tree::default();
    let metadata = fs::symlink_metadata(root).map_err(|err| EngineError::io("find", root, &err))?;
    if tree.push(PathBuf::new(), metadata) != EntryKind::Directory {
        return Ok(tree);
    }
    let mut listings = list_all(root, control)?;
    // Depth-first with an explicit stack: deep trees must not overflow ours.
    let mut pending = vec![PathBuf::new()];
    while let Some(relative_dir) = pending.pop() {
        let children = listings.remove(&relative_dir).unwrap_or_default();
        let mut subdirs = Vec::new();
        for (relative, metadata) in children {
            if tree.push(relative.clone(), metadata) == EntryKind::Directory {
                subdirs.push(relative);
            }
        }
        // Reversed onto the stack, so directories are visited in name order.
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(tree)
}

/// A directory's children (relative to the walked root), sorted by name.
type Listing = Vec<(PathBuf, Metadata)>;

/// Lists every directory below `root` (itself included), one directory at
/// a time per thread; threads inherit the caller's credentials.
fn list_all(root: &Path, control: &Control) -> Result<HashMap<PathBuf, Listing>> {
    let listers = Listers {
        root,
        control,
        // Up to four listers per CPU (at most 16): warm, listing is CPU
        // work and more threads cost nothing; cold, each directory and
        // inode read waits for the device, and more of them in flight
        // shorten it. See docs/PERFORMANCE.md, "Session 6 (2026-12-02)",
        // "The walk lists on four threads per CPU".
        max: (crate::parallel::cpus() * 4).min(16),
        queue: Mutex::new(Queue {
            pending: vec![PathBuf::new()],
            busy: 0,
            idle: 0,
            threads: 1,
            failed: None,
        }),
        wake: Condvar::new(),
        listings: Mutex::new(HashMap::new()),
    };
    std::thread::scope(|scope| listers.list(scope));
    match listers.queue.into_inner().unwrap().failed {
        Some(err) => Err(err),
        None => Ok(listers.listings.into_inner().unwrap()),
    }
}

/// The walk's listing threads and what they share. A lister is started
/// only when directories wait that no idle one will take: a small tree is
/// listed by the calling thread alone, as threads that find nothing to do
/// still cost their start (see docs/PERFORMANCE.md, "Listers started on
/// demand").
struct Listers<'r> {
    root: &'r Path,
    control: &'r Control,
    max: usize,
    queue: Mutex<Queue>,
    wake: Condvar,
    listings: Mutex<HashMap<PathBuf, Listing>>,
}

struct Queue {
    pending: Vec<PathBuf>,
    /// Directories taken but not yet listed: their subdirectories may
    /// still come.
    busy: usize,
    /// Listers waiting for a directory.
    idle: usize,
    /// Listers started (the calling thread included).
    threads: usize,
    failed: Option<EngineError>,
}

impl<'r> Listers<'r> {
    fn list<'s>(&'s self, scope: &'s std::thread::Scope<'s, '_>) {
        loop {
            let relative_dir = {
                let mut state = self.queue.lock().unwrap();
                loop {
                    if state.failed.is_some() {
                        return;
                    }
                    if let Some(dir) = state.pending.pop() {
                        state.busy += 1;
                        break dir;
                    }
                    if state.busy == 0 {
                        return;
                    }
                    state.idle += 1;
                    state = self.wake.wait(state).unwrap();
                    state.idle -= 1;
                }
            };
            let listed = self
                .control
                .checkpoint()
                .and_then(|()| list_one(self.root, &relative_dir));
            let mut state = self.queue.lock().unwrap();
            state.busy -= 1;
            match listed {
                Ok(children) => {
                    state.pending.extend(
                        children
                            .iter()
                            .filter(|(_, metadata)| metadata.is_dir())
                            .map(|(relative, _)| relative.clone()),
                    );
                    self.listings.lock().unwrap().insert(relative_dir, children);
                }
                Err(err) => {
                    state.failed.get_or_insert(err);
                }
            }
            // This lister takes one of the waiting directories itself, idle
            // ones take theirs; more listers for the rest.
            let unclaimed = state.pending.len().saturating_sub(state.idle + 1);
            let started = unclaimed.min(self.max - state.threads);
            state.threads += started;
            for _ in 0..started {
                scope.spawn(|| self.list(scope));
            }
            // Only waiting listers need telling (of new directories, of
            // the end, of a failure): a wake is a system call, and this
            // runs once per directory.
            if state.idle > 0 {
                self.wake.notify_all();
            }
        }
    }
}

/// One directory's children, sorted by name, with their metadata.
fn list_one(root: &Path, relative_dir: &Path) -> Result<Listing> {
    let dir = crate::fsutil::joined(root, relative_dir);
    // Each name is asked for once: `DirEntry::file_name` allocates, and a
    // sort keyed on it called it twice per comparison (a third of a small
    // file tree's user-space instructions went there).
    let mut children: Vec<_> = fs::read_dir(&dir)
        .map_err(|err| EngineError::io("read directory", &dir, &err))?
        .map(|child| child.map(|child| (child.file_name(), child)))
        .collect::<std::io::Result<_>>()
        .map_err(|err| EngineError::io("read directory", &dir, &err))?;
    // Names in one directory are unique: no order among equals to keep.
    children.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    let mut listing = Vec::with_capacity(children.len());
    for (name, child) in children {
        // Looked up relative to the open directory (fstatat/statx with its
        // descriptor), not by the whole path again; symlinks are not
        // followed.
        match child.metadata() {
            Ok(metadata) => listing.push((crate::fsutil::joined(relative_dir, name), metadata)),
            // Gone between listing and looking: nothing to copy.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(EngineError::io("inspect", &child.path(), &err)),
        }
    }
    Ok(listing)
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
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("a/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let tree = walk(dir.path(), &Control::default()).unwrap();
        let names: Vec<_> = tree
            .entries
            .iter()
            .map(|e| e.relative.to_string_lossy().into_owned())
            .collect();
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(pos("") < pos("a") && pos("a") < pos("a/b") && pos("a/b") < pos("a/b/f"));
        assert_eq!(
            (
                tree.files,
                tree.directories,
                tree.symlinks,
                tree.specials,
                tree.bytes
            ),
            (2, 3, 1, 1, 6)
        );
    }
}
