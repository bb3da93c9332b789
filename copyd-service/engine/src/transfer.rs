//! Carrying out a resolved request: renames for moves that can, copies built
//! under temporary names for everything else, and deletion of moved sources
//! only once their copies are durable.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rustix::io::Errno;

use crate::copier::{try_chain, CopyContext, EngineSet, FileCopier};
use crate::error::{EngineError, Result};
use crate::progress::{Control, Progress};
use crate::request::{Item, Operation, Preserve, Resolved};
use crate::walk::{self, Entry, EntryKind, Tree};
use crate::{fsutil, links, parallel, sparse};

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
    sparse: bool,
    /// Threads for a tree's files (0: one per CPU).
    workers: usize,
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
        sparse: options.sparse,
        workers: options.workers,
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

    /// Builds the copy of `tree` at `temp`, in phases: directories (walk
    /// order, so parents first), then files on the worker threads, then
    /// hard links to files copied, then symlinks, then directory metadata
    /// deepest first (making entries in a directory changes its times), then
    /// one syncfs for the lot.
    fn build(&self, item: &Item, tree: &Tree, temp: &Path) -> Result<()> {
        let entries = &tree.entries;
        let single_file = entries.len() == 1 && entries[0].kind == EntryKind::File;
        let link_of = if self.preserve.links {
            links::plan(entries)
        } else {
            vec![None; entries.len()]
        };
        let paths = |entry: &Entry| {
            (
                under(&item.source, &entry.relative),
                under(temp, &entry.relative),
            )
        };

        for entry in entries.iter().filter(|e| e.kind == EntryKind::Directory) {
            self.control.checkpoint()?;
            let (_, copy) = paths(entry);
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&copy)
                .map_err(|err| EngineError::io("create directory", &copy, &err))?;
            self.progress.add_files_done(1);
        }

        // Largest first, so one big file does not start last and run alone.
        let mut files: Vec<&Entry> = entries
            .iter()
            .zip(&link_of)
            .filter(|(e, link)| e.kind == EntryKind::File && link.is_none())
            .map(|(e, _)| e)
            .collect();
        files.sort_by_key(|e| std::cmp::Reverse(e.metadata.len()));
        let workers = parallel::worker_count(self.workers, files.len());
        parallel::for_each(workers, &files, |entry| {
            self.control.checkpoint()?;
            let (source, copy) = paths(entry);
            self.progress.set_current_path(&source);
            self.copy_file(&source, &copy, entry, single_file)?;
            self.progress.add_files_done(1);
            Ok(())
        })?;

        for (entry, first) in entries.iter().zip(&link_of) {
            if let Some(first) = first {
                self.control.checkpoint()?;
                let ((_, copy), (_, original)) = (paths(entry), paths(&entries[*first]));
                fs::hard_link(&original, &copy)
                    .map_err(|err| EngineError::io("link", &copy, &err))?;
                // Its bytes are in the total, but cost nothing.
                self.progress.add_bytes_uncopied(entry.metadata.len());
                self.progress.add_files_done(1);
            }
        }

        for entry in entries.iter().filter(|e| e.kind == EntryKind::Symlink) {
            self.control.checkpoint()?;
            let (source, copy) = paths(entry);
            self.progress.set_current_path(&source);
            let link = fs::read_link(&source)
                .map_err(|err| EngineError::io("read symlink", &source, &err))?;
            std::os::unix::fs::symlink(&link, &copy)
                .map_err(|err| EngineError::io("create symlink", &copy, &err))?;
            fsutil::carry_path_metadata(Some(&source), &copy, &entry.metadata, &self.preserve)?;
            self.progress.add_files_done(1);
        }

        for entry in entries
            .iter()
            .rev()
            .filter(|e| e.kind == EntryKind::Directory)
        {
            let (source, copy) = paths(entry);
            fsutil::carry_path_metadata(Some(&source), &copy, &entry.metadata, &self.preserve)?;
        }
        if !single_file {
            // One syncfs for a whole tree instead of one fsync per file.
            fsutil::sync_filesystem(temp.parent().unwrap_or(Path::new("/")))?;
        }
        Ok(())
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
            self.copy_data(&src, &dst, len, &ctx)?;
        }
        fsutil::carry_file_metadata(Some(&src), &dst, copy, &entry.metadata, &self.preserve)?;
        if sync {
            dst.sync_data()
                .map_err(|err| EngineError::io("sync", copy, &err))?;
        }
        Ok(())
    }

    /// Copies a file's `len` bytes: whole by an engine that shares extents,
    /// if one can here; otherwise data extent by data extent (with sparse),
    /// leaving holes as holes and counting them as done.
    fn copy_data(&self, src: &File, dst: &File, len: u64, ctx: &CopyContext<'_>) -> Result<()> {
        let (cloners, movers): (Vec<&dyn FileCopier>, Vec<&dyn FileCopier>) = self
            .chain
            .iter()
            .partition(|engine| engine.shares_extents());
        if !cloners.is_empty() {
            match try_chain(&cloners, src, dst, 0, len, ctx)? {
                Ok(_) => return Ok(()),
                Err(unsupported) if movers.is_empty() => {
                    return Err(unsupported.into_error(ctx.source))
                }
                Err(_) => {}
            }
        }
        let extents = if self.sparse {
            sparse::data_extents(src, len)
        } else {
            std::iter::once(0..len).collect()
        };
        // An engine that could not copy one extent of this pair of files
        // cannot copy the next either: start each try where the last worked.
        let mut chain = &movers[..];
        let mut copied = 0;
        for extent in extents {
            let extent_len = extent.end - extent.start;
            match try_chain(chain, src, dst, extent.start, extent_len, ctx)? {
                Ok(used) => chain = &chain[used..],
                Err(unsupported) => return Err(unsupported.into_error(ctx.source)),
            }
            copied += extent_len;
        }
        if copied < len {
            ctx.progress.add_bytes_uncopied(len - copied);
            // Trailing holes: the copy ends where its last extent did.
            dst.set_len(len)
                .map_err(|err| EngineError::io("extend the copy of", ctx.source, &err))?;
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
