//! Putting items in place: what stands at a target (`look_at_target`),
//! moves by rename, building an item under its temporary name and renaming
//! it into place, and discarding what a run left.

use super::*;

impl Transfer<'_> {
    /// What stands at `item`'s target now. The target did not exist when
    /// the job was made (short of on-conflict overwrite), so anything there
    /// is either this item's copy, placed by an earlier run that died before
    /// saying so, or someone else's. Only the inode recorded before the
    /// rename proves the first (see `provenance`); a move's leftover source
    /// is then deleted, its copy being proven.
    pub(super) fn look_at_target(&self, item: &Item, index: usize) -> Result<AtTarget> {
        let target = match fs::symlink_metadata(&item.target) {
            Ok(target) => target,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(AtTarget::Free),
            Err(err) => return Err(EngineError::io("look at", &item.target, &err)),
        };
        if self.resume.resuming && provenance::is_placed_copy(&target, index, self.resume) {
            if self.is_move() && fs::symlink_metadata(&item.source).is_ok() {
                remove_moved_source(item)?;
            }
            self.count_item_without_copy();
            self.journal.item_done(index);
            return Ok(AtTarget::Placed);
        }
        Ok(match item.replace {
            // The old target the job was asked to replace (or another file
            // in its place: replaced all the same).
            true => AtTarget::Free,
            false => AtTarget::Foreign,
        })
    }

    /// Whether `err`, of one file, lets the job go on without that file:
    /// on-error continue, and more than one item (a job of one file fails
    /// with its error).
    pub(super) fn fails_alone(&self, err: &EngineError) -> bool {
        err.per_file && self.on_error == OnError::Continue && self.items > 1
    }

    /// Lists `source` (whose copy was to be `target`) as failed alone.
    pub(super) fn fail_alone(&self, source: &Path, target: &Path, error: EngineError) {
        self.failures.lock().unwrap().push(Failure {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            error,
        });
    }

    /// Counts an item that failed alone as done, so the totals add up: its
    /// files (as one, it being a lone file or a tree whose copy was thrown
    /// away whole) and what was left of its bytes.
    pub(super) fn count_failed_item(&self, tree: &Tree) {
        self.progress.add_bytes_uncopied(tree.bytes);
        self.progress.add_files_done(tree.entry_count());
    }

    /// Counts an item that needs no copy (placed before, skipped, failed)
    /// as one file done, so the totals add up.
    pub(super) fn count_item_without_copy(&self) {
        self.progress.add_totals(1, 0);
        self.progress.add_files_done(1);
    }

    pub(super) fn is_move(&self) -> bool {
        self.operation == Operation::Move
    }

    /// Moves `item` by renaming it, if source and target share a file
    /// system. Returns false when they do not (EXDEV): it must be copied.
    pub(super) fn try_rename(&self, item: &Item, index: usize) -> Result<bool> {
        self.control.checkpoint()?;
        if self.renames_inside && item.kind == EntryKind::Directory {
            // A rename of the tree would keep the names inside it.
            return Ok(false);
        }
        self.progress.set_current_path(&item.source);
        let source = fs::symlink_metadata(&item.source)
            .map_err(|err| EngineError::io("look at", &item.source, &err))?;
        let target_dir = fs::metadata(parent_of(&item.target))
            .map_err(|err| EngineError::io("look at", parent_of(&item.target), &err))?;
        if source.dev() != target_dir.dev() {
            return Ok(false);
        }
        // After the rename the target is this inode: what recovery checks
        // before it takes a target for this item's (see look_at_target).
        self.journal.item_built(index, CopyIdentity::of(&source));
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
        let directory = item.kind == EntryKind::Directory;
        (self.progress.placed()).note(Action::Renamed, directory, &item.source, &item.target);
        Ok(true)
    }

    /// Copies `item` on its own: built, made durable (with sync), put in
    /// place and, for a move, its source deleted.
    pub(super) fn copy_whole_item(&self, index: usize, item: &Item, tree: &Tree) -> Result<()> {
        let failures_before = self.failures.lock().unwrap().len();
        let source_dir = self.moved_source_dir(item)?;
        self.copy_item(item, index, tree)?;
        if item.replace {
            self.progress.note_conflict(ConflictDecision::Overwritten);
        }
        let whole = self.failures.lock().unwrap().len() == failures_before;
        if self.preserve.links && whole {
            self.placed.remember(&tree.entries, &item.target);
        }
        if self.progress.placed().is_on() {
            // The whole tree appeared at once, under its final name.
            let failed: Vec<PathBuf> = self.failures.lock().unwrap()[failures_before..]
                .iter()
                .map(|failure| failure.source.clone())
                .collect();
            (self.progress.placed()).note_tree(&item.source, &item.target, tree, &failed);
        }
        if let (Some(source_dir), true) = (&source_dir, whole) {
            // The copy is durable (copy_item synced it): now the source may go.
            remove_moved_source_in(source_dir, item)?;
            source_dir.sync()?;
            self.progress.placed().note_removed_tree(&item.source, tree);
        }
        self.journal.item_done(index);
        Ok(())
    }

    /// A moved source is deleted in the directory the copy read it from,
    /// even if its path names another one by then: that directory, opened
    /// before the copy.
    pub(super) fn moved_source_dir(&self, item: &Item) -> Result<Option<AnchoredDir>> {
        match self.operation {
            Operation::Move => AnchoredDir::open(parent_of(&item.source)).map(Some),
            Operation::Copy => Ok(None),
        }
    }

    /// Removes a temporary copy that will not be placed, unless the job is
    /// interrupted: an interrupted job keeps its partial copies for the
    /// resume; a failed or cancelled one leaves nothing behind.
    pub(super) fn discard(&self, temp: &Path) {
        if self.control.is_interrupted() {
            return;
        }
        if let Err(cleanup) = fsutil::remove_all(temp) {
            tracing::warn!(%cleanup, "could not remove a temporary copy");
        }
    }

    /// Whether something stands at `temp` that is this job's own, left by
    /// an earlier run (see `provenance`).
    pub(super) fn own_leftover(&self, temp: &Path, item: &Item, index: usize) -> bool {
        fs::symlink_metadata(temp).is_ok_and(|leftover| {
            provenance::is_own_leftover(&leftover, item, index, self.resume, self.preserve)
        })
    }

    /// Removes what an earlier run left of an item that will not be built
    /// now, if it is this job's own; a failure is only logged (the item is
    /// not built either way).
    pub(super) fn discard_own_leftover(&self, item: &Item, index: usize) {
        let Ok(anchor) = AnchoredDir::open(parent_of(&item.target)) else {
            return;
        };
        let (temp, _) = self.names_in(&anchor, item, index);
        if self.own_leftover(&temp, item, index) {
            if let Err(err) = fsutil::remove_all(&temp) {
                tracing::warn!(err = %anchor.explain(err), "could not remove a temporary copy");
            }
        }
    }

    /// Frees `temp` for a fresh build: removes a leftover of this job's;
    /// anything else there is left alone, and the item fails (the name has
    /// a random part per job: nobody else's file gets it by chance).
    pub(super) fn clear_leftover(&self, temp: &Path, item: &Item, index: usize) -> Result<()> {
        if !self.resume.resuming {
            // The job's first run: nothing there can be its own, and the
            // build creates the name exclusively (O_EXCL, mkdir), so what
            // stands there fails the item all the same, one lookup fewer.
            return Ok(());
        }
        match fs::symlink_metadata(temp) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(EngineError::io("look at", temp, &err)),
            Ok(_) if self.own_leftover(temp, item, index) => fsutil::remove_all(temp),
            Ok(_) => Err(provenance::foreign_temporary(temp)),
        }
    }

    /// The item's temporary and final paths through `anchor`, its target's
    /// directory opened before the copy: everything after goes through that
    /// open directory, so a symlink swapped into the destination's path
    /// meanwhile changes nothing.
    pub(super) fn names_in(
        &self,
        anchor: &AnchoredDir,
        item: &Item,
        index: usize,
    ) -> (PathBuf, PathBuf) {
        let temp_name = fsutil::temp_path(&item.target, self.tag, index);
        let temp = anchor.join(temp_name.file_name().expect("temp names have a name"));
        let target = anchor.join(item.target.file_name().unwrap_or(item.target.as_os_str()));
        (temp, target)
    }

    /// Builds `item` under its temporary name, makes it durable (with sync)
    /// and renames it into place. On failure the temporary is removed.
    pub(super) fn copy_item(&self, item: &Item, index: usize, tree: &Tree) -> Result<()> {
        let anchor = AnchoredDir::open(parent_of(&item.target))?;
        let (temp, target) = self.names_in(&anchor, item, index);
        let carry_on =
            self.resume.started.contains(&index) && self.own_leftover(&temp, item, index);
        if !carry_on {
            self.clear_leftover(&temp, item, index)
                .map_err(|err| anchor.explain(err))?;
            self.journal.item_started(index);
        }
        let built = self
            .build(item, index, tree, &temp, carry_on, self.sync)
            .and_then(|()| {
                if item.replace {
                    self.take_replaced_attributes(&temp, &target)?;
                }
                self.journal.item_built(index, built_identity(&temp)?);
                fsutil::rename_into_place(&temp, &target, item.replace)
            });
        if let Err(err) = built {
            self.discard(&temp);
            return Err(anchor.explain(err));
        }
        if self.sync {
            anchor.sync()?;
        }
        Ok(())
    }
}

/// Whether `item` is a directory whose target is a directory too (then
/// overwrite merges instead of replacing).
pub(super) fn item_meets_directory(item: &Item) -> bool {
    item.kind == EntryKind::Directory
        && fs::symlink_metadata(&item.target).is_ok_and(|m| m.is_dir())
}

pub(super) fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

/// Deletes a moved item's source in `source_dir`, the directory its copy
/// read it from.
pub(super) fn remove_moved_source_in(source_dir: &AnchoredDir, item: &Item) -> Result<()> {
    let name = item.source.file_name().unwrap_or(item.source.as_os_str());
    fsutil::remove_all(&source_dir.join(name)).map_err(|err| source_dir.explain(err))
}

pub(super) fn remove_moved_source(item: &Item) -> Result<()> {
    fsutil::remove_all(&item.source)?;
    match item.source.parent() {
        Some(parent) => fsutil::fsync_dir(parent),
        None => Ok(()),
    }
}

pub(super) fn is_cross_device(err: &EngineError) -> bool {
    err.is_os_error(Errno::XDEV)
}

/// The inode of a built copy at `temp`, for the journal before its rename.
pub(super) fn built_identity(temp: &Path) -> Result<CopyIdentity> {
    fs::symlink_metadata(temp)
        .map(|built| CopyIdentity::of(&built))
        .map_err(|err| EngineError::io("look at", temp, &err))
}

/// What [`Transfer::look_at_target`] found at an item's target.
pub(super) enum AtTarget {
    /// Nothing, or the old target on-conflict overwrite replaces.
    Free,
    /// The item's copy, placed by an earlier run.
    Placed,
    /// Something this job cannot prove it made.
    Foreign,
}

/// The directories a group of lone files was copied from and to, each
/// opened once: the files of `copy *.jpg dir/` share one of each.
#[derive(Default)]
pub(super) struct OpenDirs(Vec<Arc<AnchoredDir>>);

impl OpenDirs {
    pub(super) fn open(&mut self, path: &Path) -> Result<Arc<AnchoredDir>> {
        if let Some(dir) = self.0.iter().find(|dir| dir.path == path) {
            return Ok(Arc::clone(dir));
        }
        let dir = Arc::new(AnchoredDir::open(path)?);
        self.0.push(Arc::clone(&dir));
        Ok(dir)
    }
}

/// Syncs the file system of each directory, each file system once.
/// (A group's files mostly share one directory: each directory is looked
/// at once, not once per file.)
pub(super) fn sync_each_file_system<'d>(dirs: impl Iterator<Item = &'d AnchoredDir>) -> Result<()> {
    let (mut seen, mut synced): (Vec<&Path>, Vec<u64>) = (Vec::new(), Vec::new());
    for dir in dirs {
        if seen.contains(&dir.path.as_path()) {
            continue;
        }
        seen.push(&dir.path);
        let device = dir.device()?;
        if !synced.contains(&device) {
            dir.sync_file_system()?;
            synced.push(device);
        }
    }
    Ok(())
}

/// Fsyncs each directory once, however often it comes.
pub(super) fn sync_each_directory<'d>(dirs: impl Iterator<Item = &'d AnchoredDir>) -> Result<()> {
    let mut synced: Vec<&Path> = Vec::new();
    for dir in dirs {
        if !synced.contains(&dir.path.as_path()) {
            dir.sync()?;
            synced.push(&dir.path);
        }
    }
    Ok(())
}
