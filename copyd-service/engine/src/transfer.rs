//! Carrying out a resolved request: renames for moves that can, copies built
//! under temporary names for everything else, and deletion of moved sources
//! only once their copies are durable.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rustix::io::Errno;

use crate::copier::{copy_with_fallback, CopyContext, EngineSet, FileCopier};
use crate::error::{EngineError, Result};
use crate::fsutil;
use crate::progress::{Control, Progress};
use crate::request::{Item, Operation, Preserve, Resolved};
use crate::walk::{self, Entry, EntryKind, Tree};

/// What a finished transfer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Items copied (or, for moves across file systems, copied then deleted).
    pub copied: usize,
    /// Items moved by a rename.
    pub renamed: usize,
    /// Items left alone because their target existed (on-conflict skip).
    pub skipped: usize,
}

/// Everything the steps of one transfer share.
struct Transfer<'a> {
    chain: Vec<&'a dyn FileCopier>,
    preserve: Preserve,
    tag: &'a str,
    progress: &'a Progress,
    control: &'a Control,
}

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
    let options = &resolved.request.options;
    let transfer = Transfer {
        chain: engines.select(&options.engine)?,
        preserve: options.preserve,
        tag,
        progress,
        control,
    };
    control.set_rate_limit(options.rate_limit);
    control.checkpoint()?;

    let mut outcome = Outcome::default();
    let mut to_copy = Vec::new();
    for (index, item) in resolved.items.iter().enumerate() {
        if item.skip {
            progress.add_totals(1, 0);
            progress.add_files_done(1);
            outcome.skipped += 1;
            continue;
        }
        if resolved.request.operation == Operation::Move && transfer.try_rename(item)? {
            outcome.renamed += 1;
            continue;
        }
        to_copy.push((index, item));
    }

    // Walk everything first, so totals are known before the first byte.
    let mut trees = Vec::with_capacity(to_copy.len());
    for (_, item) in &to_copy {
        let tree = walk::walk(&item.source, control)?;
        progress.add_totals(tree.entry_count(), tree.bytes);
        trees.push(tree);
    }

    for ((index, item), tree) in to_copy.into_iter().zip(trees) {
        transfer.copy_item(item, index, &tree)?;
        if resolved.request.operation == Operation::Move {
            // The copy is durable (copy_item synced it): now the source may go.
            fsutil::remove_all(&item.source)?;
            if let Some(parent) = item.source.parent() {
                fsutil::fsync_dir(parent)?;
            }
        }
        outcome.copied += 1;
    }
    Ok(outcome)
}

impl Transfer<'_> {
    /// Moves `item` by renaming it, if source and target share a file
    /// system. Returns false when they do not (EXDEV): it must be copied.
    fn try_rename(&self, item: &Item) -> Result<bool> {
        self.control.checkpoint()?;
        self.progress.set_current_path(&item.source);
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

    /// Builds `item` under its temporary name, makes it durable and renames it
    /// into place. On failure the temporary is removed.
    fn copy_item(&self, item: &Item, index: usize, tree: &Tree) -> Result<()> {
        let temp = fsutil::temp_path(&item.target, self.tag, index);
        // A leftover can only be this very job's, from an interrupted run.
        fsutil::remove_all(&temp)?;
        let built = self
            .build(item, tree, &temp)
            .and_then(|()| fsutil::rename_into_place(&temp, &item.target, item.replace));
        if let Err(err) = built {
            if let Err(cleanup) = fsutil::remove_all(&temp) {
                tracing::warn!(%cleanup, "could not remove a temporary copy");
            }
            return Err(err);
        }
        fsutil::fsync_dir(item.target.parent().unwrap_or(Path::new("/")))
    }

    fn build(&self, item: &Item, tree: &Tree, temp: &Path) -> Result<()> {
        let single_file = tree.entries.len() == 1 && tree.entries[0].kind == EntryKind::File;
        for entry in &tree.entries {
            self.control.checkpoint()?;
            let source = under(&item.source, &entry.relative);
            let copy = under(temp, &entry.relative);
            self.progress.set_current_path(&source);
            self.copy_entry(entry, &source, &copy, single_file)?;
            self.progress.add_files_done(1);
        }
        // Directory times change as entries are made in them: set them last,
        // deepest first.
        for entry in tree.entries.iter().rev() {
            if entry.kind == EntryKind::Directory {
                fsutil::apply_path_metadata(
                    &temp.join(&entry.relative),
                    &entry.metadata,
                    &self.preserve,
                )?;
            }
        }
        if !single_file {
            // One syncfs for a whole tree instead of one fsync per file.
            fsutil::sync_filesystem(temp.parent().unwrap_or(Path::new("/")))?;
        }
        Ok(())
    }

    fn copy_entry(&self, entry: &Entry, source: &Path, copy: &Path, sync_file: bool) -> Result<()> {
        match entry.kind {
            EntryKind::Directory => fs::DirBuilder::new()
                .mode(0o700)
                .create(copy)
                .map_err(|err| EngineError::io("create directory", copy, &err)),
            EntryKind::Symlink => {
                let link = fs::read_link(source)
                    .map_err(|err| EngineError::io("read symlink", source, &err))?;
                std::os::unix::fs::symlink(&link, copy)
                    .map_err(|err| EngineError::io("create symlink", copy, &err))?;
                fsutil::apply_path_metadata(copy, &entry.metadata, &self.preserve)
            }
            EntryKind::File => self.copy_file(source, copy, entry, sync_file),
        }
    }

    fn copy_file(&self, source: &Path, copy: &Path, entry: &Entry, sync: bool) -> Result<()> {
        let src = open_nofollow(source).map_err(|err| EngineError::io("open", source, &err))?;
        // New files are private until complete; the final mode comes last.
        let dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(copy)
            .map_err(|err| EngineError::io("create", copy, &err))?;
        let len = entry.metadata.len();
        let ctx = CopyContext {
            progress: self.progress,
            control: self.control,
            source,
        };
        if len > 0 {
            copy_with_fallback(&self.chain, &src, &dst, 0, len, &ctx)?;
        }
        fsutil::apply_file_metadata(&dst, copy, &entry.metadata, &self.preserve)?;
        if sync {
            dst.sync_data()
                .map_err(|err| EngineError::io("sync", copy, &err))?;
        }
        Ok(())
    }
}

/// `root` joined with a walked entry's relative path; the root entry's is
/// empty, and `Path::join("")` would add a trailing slash, which makes
/// opening a file fail with ENOTDIR.
fn under(root: &Path, relative: &Path) -> std::path::PathBuf {
    if relative.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(relative)
    }
}

fn is_cross_device(err: &EngineError) -> bool {
    err.is_os_error(Errno::XDEV)
}

/// Opens `path` read-only without following a final symlink.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}
