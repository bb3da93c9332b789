//! Reports of what a transfer put under final names (and, for a move, what
//! it removed), one per file, for a job whose owner asked to hear of each
//! (`cp -v`, `mv -v`). They are gathered here and taken in batches by
//! whoever watches the transfer, as the counters are.
//!
//! A transfer nobody asked this of pays one relaxed load per item (not per
//! file): nothing is gathered, no path is built.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::fsutil::under;
use crate::walk::{Entry, EntryKind, Tree};

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Its copy now stands at the target (made there, or merged into a
    /// directory that stood there).
    Copied,
    /// It was renamed to the target (a move on one file system).
    Renamed,
    /// A moved source, removed once its copy was placed (no target).
    Removed,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Copied => "copied",
            Action::Renamed => "renamed",
            Action::Removed => "removed",
        }
    }
}

/// One report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedFile {
    pub action: Action,
    pub directory: bool,
    pub source: PathBuf,
    /// Empty for [`Action::Removed`].
    pub target: PathBuf,
}

/// The reports not yet taken, gathered only once [`enable`](Self::enable)d.
#[derive(Debug, Default)]
pub struct FileReports {
    on: AtomicBool,
    pending: Mutex<Vec<PlacedFile>>,
}

impl FileReports {
    /// From now on, gather reports.
    pub fn enable(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub fn note(&self, action: Action, directory: bool, source: &Path, target: &Path) {
        if !self.is_on() {
            return;
        }
        self.pending.lock().unwrap().push(PlacedFile {
            action,
            directory,
            source: source.to_path_buf(),
            target: target.to_path_buf(),
        });
    }

    /// Every entry of `tree` (copied from `source` to `target`), each
    /// directory followed by what is under it, names in order, as cp lists
    /// them (the walk lists a directory's entries before descending); those
    /// whose source is in `left_out` (failed alone) are not.
    pub fn note_tree(&self, source: &Path, target: &Path, tree: &Tree, left_out: &[PathBuf]) {
        if !self.is_on() {
            return;
        }
        let mut pending = self.pending.lock().unwrap();
        for entry in depth_first(tree) {
            let from = under(source, &entry.relative);
            if left_out.contains(&from) {
                continue;
            }
            pending.push(PlacedFile {
                action: Action::Copied,
                directory: entry.kind == EntryKind::Directory,
                target: under(target, entry.copy_relative()),
                source: from,
            });
        }
    }

    /// Every entry of the moved `tree` at `source`, removed: deepest first,
    /// as `rm -r` (and mv across file systems) lists them.
    pub fn note_removed_tree(&self, source: &Path, tree: &Tree) {
        if !self.is_on() {
            return;
        }
        let mut pending = self.pending.lock().unwrap();
        for entry in depth_first(tree).into_iter().rev() {
            pending.push(PlacedFile {
                action: Action::Removed,
                directory: entry.kind == EntryKind::Directory,
                source: under(source, &entry.relative),
                target: PathBuf::new(),
            });
        }
    }

    /// The reports gathered since the last take, in the order made.
    pub fn take(&self) -> Vec<PlacedFile> {
        if !self.is_on() {
            return Vec::new();
        }
        std::mem::take(&mut *self.pending.lock().unwrap())
    }
}

/// `tree`'s entries in depth-first order: paths compare component by
/// component, so a directory's subtree sorts right after it.
fn depth_first(tree: &Tree) -> Vec<&Entry> {
    let mut entries: Vec<&Entry> = tree.entries.iter().collect();
    entries.sort_by(|a, b| a.relative.cmp(&b.relative));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_gathered_unless_enabled() {
        let reports = FileReports::default();
        reports.note(Action::Copied, false, Path::new("/a"), Path::new("/b"));
        assert!(reports.take().is_empty());
        reports.enable();
        reports.note(Action::Renamed, true, Path::new("/a"), Path::new("/b"));
        let taken = reports.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].action, Action::Renamed);
        assert!(taken[0].directory);
        assert!(reports.take().is_empty(), "a take empties the reports");
    }

    #[test]
    fn a_tree_is_listed_depth_first_and_removed_deepest_first() {
        let dir = tempfile::tempdir().unwrap();
        for path in ["a/x", "b"] {
            std::fs::create_dir_all(dir.path().join(path)).unwrap();
        }
        std::fs::write(dir.path().join("a/x/f"), "f").unwrap();
        let tree = crate::walk::walk(dir.path(), &crate::Control::default()).unwrap();
        let reports = FileReports::default();
        reports.enable();
        reports.note_tree(dir.path(), Path::new("/t"), &tree, &[]);
        reports.note_removed_tree(dir.path(), &tree);
        let taken = reports.take();
        let copied: Vec<_> = taken[..5].iter().map(|r| r.target.clone()).collect();
        let want: Vec<PathBuf> = ["/t", "/t/a", "/t/a/x", "/t/a/x/f", "/t/b"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(copied, want);
        let removed: Vec<_> = taken[5..].iter().map(|r| r.source.clone()).collect();
        let want: Vec<PathBuf> = ["b", "a/x/f", "a/x", "a", ""]
            .iter()
            .map(|r| under(dir.path(), Path::new(r)))
            .collect();
        assert_eq!(removed, want);
        assert!(taken[5..].iter().all(|r| r.action == Action::Removed));
    }
}
