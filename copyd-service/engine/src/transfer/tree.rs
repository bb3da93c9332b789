//! Building one item's tree under its temporary name: directories a level
//! at a time, files on the workers (small ones in runs of one directory,
//! maybe in io_uring batches), hard links, symlinks and special files, then
//! directory metadata.

use super::*;

impl Transfer<'_> {
    /// Builds the copy of `tree` at `temp`, in phases: directories (walk
    /// order, so parents first), then files on the worker threads, then
    /// hard links to files copied, then symlinks, then directory metadata
    /// deepest first (making entries in a directory changes its times), then
    /// (with sync) one syncfs for the lot. A lone file is fdatasynced
    /// instead, if `sync_lone_file`.
    pub(super) fn build(
        &self,
        item: &Item,
        index: usize,
        tree: &Tree,
        temp: &Path,
        carry_on: bool,
        sync_lone_file: bool,
    ) -> Result<()> {
        let entries = &tree.entries;
        let group = GroupCommit::new(index, self.journal);
        let temp_parent = temp.parent().unwrap_or(Path::new("/"));
        // Every copy of the item lands on its temporary's file system:
        // looked up once for the route reports, not once per file.
        let copy_device = fs::metadata(temp_parent).map_or(0, |m| m.dev());
        // On carrying on, whatever stands at a copy's path is from the
        // interrupted run: replaced unless the journal vouches for it.
        let clear = |copy: &Path| {
            if carry_on {
                fsutil::remove_all(copy)
            } else {
                Ok(())
            }
        };
        let single_file = entries.len() == 1 && entries[0].kind == EntryKind::File;
        let link_of = if self.preserve.links {
            links::plan(entries)
        } else {
            vec![None; entries.len()]
        };
        let paths = |entry: &Entry| {
            (
                under(&item.source, &entry.relative),
                under(temp, entry.copy_relative()),
            )
        };

        // Directories, a level at a time (parents first), the directories
        // of a level on the workers together.
        let levels = directory_levels(entries);
        let level_workers = |level: &[&Entry]| parallel::worker_count(self.workers, level.len());
        for level in &levels {
            parallel::for_each(level_workers(level), level, |entry| {
                self.control.checkpoint()?;
                let (_, copy) = paths(entry);
                match fs::DirBuilder::new().mode(0o700).create(&copy) {
                    Err(err) if carry_on && err.kind() == io::ErrorKind::AlreadyExists => {}
                    result => {
                        result.map_err(|err| EngineError::io("create directory", &copy, &err))?
                    }
                }
                // Counted done with its metadata, after its files: counted
                // here, a tree's directories made files_done run ahead of
                // bytes_done before any file was copied.
                Ok(())
            })?;
        }

        // Large files first, largest first, so one big file does not start
        // last and run alone; then the small ones in walk order, handed out
        // in runs of one directory's files.
        let (mut files, small): (Vec<&Entry>, Vec<&Entry>) = entries
            .iter()
            .zip(&link_of)
            .filter(|(e, link)| e.kind == EntryKind::File && link.is_none())
            .map(|(e, _)| e)
            .partition(|e| e.metadata.len() >= LARGE_FILE);
        files.sort_by_key(|e| std::cmp::Reverse(e.metadata.len()));
        // Each large file is a run of its own; small ones go in runs of one
        // directory's files (at most SMALL_FILE_RUN of them).
        let large = files.len();
        let mut runs: Vec<_> = (0..large).map(|i| i..i + 1).collect();
        for entry in small {
            let next = files.len();
            match runs.last_mut() {
                Some(run)
                    if run.start >= large
                        && run.len() < SMALL_FILE_RUN
                        && files[run.start].directory() == entry.directory() =>
                {
                    run.end = next + 1
                }
                _ => runs.push(next..next + 1),
            }
            files.push(entry);
        }
        let workers = self.file_workers(&files, large, &item.source);
        // A tree whose progress is kept has its finished files made durable
        // in groups as they come, beside the workers.
        let committing = !single_file && self.journal.is_kept();
        // What follows every file's copy, however it was made.
        let finished = |entry: &Entry| -> Result<()> {
            self.progress.add_files_done(1);
            if committing {
                group.finished(entry.relative.clone())?;
            }
            Ok(())
        };
        let one_file = |entry: &Entry, dirs: Option<&RunDirs>| -> Result<()> {
            self.control.checkpoint()?;
            let (source, copy) = paths(entry);
            if carry_on && self.resume.is_durable(index, &entry.relative) {
                self.progress.add_bytes_uncopied(entry.metadata.len());
                self.progress.add_files_done(1);
                return Ok(());
            }
            // Another name of a file an earlier item copied: linked to that
            // copy, as within a tree.
            if self.preserve.links && links::has_other_names(entry) {
                if carry_on {
                    fsutil::remove_all(&copy)?;
                }
                if self.placed.link(entry, &copy) {
                    self.progress.add_bytes_uncopied(entry.metadata.len());
                    return finished(entry);
                }
            }
            self.progress.set_current_path(&source);
            let sync = single_file && sync_lone_file;
            let at = FileAt {
                source: &source,
                copy: &copy,
                dirs,
                copy_device,
            };
            match self.copy_file(at, entry, sync, index, carry_on) {
                Err(err) if err.per_file && !single_file && self.on_error == OnError::Continue => {
                    // Go on without it; nothing of it stays in the copy.
                    fsutil::remove_all(&copy)?;
                    self.progress.add_bytes_uncopied(entry.metadata.len());
                    let target = under(&item.target, entry.copy_relative());
                    self.fail_alone(&source, &target, err);
                }
                result => result?,
            }
            finished(entry)
        };
        // Only a fresh build's copies are created in place by name: carrying
        // on looks at each path first.
        let fresh_tree = !single_file && !carry_on;
        let copy_files = || {
            parallel::for_each_whole_run(workers, &files, &runs, |run, stopped| {
                // A run of one directory's files names them relative to that
                // directory and its copy, opened once.
                let dirs = match fresh_tree && run.len() > 1 {
                    true => RunDirs::open(run, &item.source, temp, self.preserve),
                    false => None,
                };
                // Its small files may go through a ring in batches; whatever a
                // batch does not copy goes the ordinary way.
                let device = run[0].metadata.dev();
                let rest = match (&dirs, self.small_file_batches(device, copy_device)) {
                    (Some(dirs), Some(rings)) => {
                        self.copy_in_batches(rings, run, dirs, copy_device, &finished)?
                    }
                    _ => run.to_vec(),
                };
                for entry in rest {
                    if stopped() {
                        break;
                    }
                    one_file(entry, dirs.as_ref())?;
                }
                Ok(())
            })
        };
        match committing {
            true => group.commit_beside(|| fsutil::sync_filesystem(temp_parent), copy_files)?,
            false => copy_files()?,
        }

        for (entry, first) in entries.iter().zip(&link_of) {
            if let Some(first) = first {
                self.control.checkpoint()?;
                let ((_, copy), (_, original)) = (paths(entry), paths(&entries[*first]));
                clear(&copy)?;
                fs::hard_link(&original, &copy)
                    .map_err(|err| EngineError::io("link", &copy, &err))?;
                // Its bytes are in the total, but cost nothing.
                self.progress.add_bytes_uncopied(entry.metadata.len());
                self.progress.add_files_done(1);
            }
        }

        // Symlinks and special files are made anew, nothing read through
        // them. One that cannot be (a device node, for a caller who may not
        // create one) fails alone, unless it is the whole item.
        let nodes = entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::Symlink | EntryKind::Special));
        for entry in nodes {
            self.control.checkpoint()?;
            let (source, copy) = paths(entry);
            self.progress.set_current_path(&source);
            clear(&copy)?;
            match make_node(entry, &source, &copy) {
                Err(err)
                    if err.per_file && entries.len() > 1 && self.on_error == OnError::Continue =>
                {
                    let target = under(&item.target, entry.copy_relative());
                    self.fail_alone(&source, &target, err);
                    self.progress.add_files_done(1);
                    continue;
                }
                result => result?,
            }
            metadata::carry_path_metadata(Some(&source), &copy, &entry.metadata, &self.preserve)?;
            self.progress.add_files_done(1);
        }

        // Directory metadata deepest level first: a directory whose mode
        // shuts its owner out must not be given it before its
        // subdirectories got theirs. Within a level, order does not matter
        // (a directory's own times change only with its entries).
        for level in levels.iter().rev() {
            parallel::for_each(level_workers(level), level, |entry| {
                let (source, copy) = paths(entry);
                metadata::carry_path_metadata(
                    Some(&source),
                    &copy,
                    &entry.metadata,
                    &self.preserve,
                )?;
                self.progress.add_files_done(1);
                Ok(())
            })?;
        }
        if !single_file && self.sync {
            // One syncfs for a whole tree instead of one fsync per file.
            fsutil::sync_filesystem(temp.parent().unwrap_or(Path::new("/")))?;
        }
        Ok(())
    }

    /// Workers for a tree's `files` (the first `large` of them large): as
    /// [`Self::workers_for_small_files`] says, unless there are more large
    /// files than CPUs (many large files at once compete for the device).
    pub(super) fn file_workers(&self, files: &[&Entry], large: usize, source: &Path) -> usize {
        let workers = parallel::worker_count(self.workers, files.len());
        let small = &files[large..];
        if large > workers {
            return workers;
        }
        self.workers_for_small_files(workers, small.len(), |k| {
            under(source, &small[k * small.len() / COLD_SAMPLES].relative)
        })
    }

    /// `workers` (one per CPU, or as many as asked), or four per CPU (at
    /// most 16) for `count` small files whose bytes must come from the
    /// device, when the caller did not choose a number: `sample(k)`, for k
    /// below COLD_SAMPLES, names the files looked at (see
    /// `residency::most_files_uncached`). Each such file is one short read
    /// that waits for the device, and two readers leave a virtio or NVMe
    /// queue nearly empty; warm, more workers gain nothing. See
    /// docs/PERFORMANCE.md, "Session 6 (2026-12-02)", "Cold small files get
    /// more workers".
    pub(super) fn workers_for_small_files(
        &self,
        workers: usize,
        count: usize,
        sample: impl Fn(usize) -> PathBuf,
    ) -> usize {
        if self.workers != 0 || count < COLD_SAMPLES * 8 {
            return workers;
        }
        let sampled: Vec<PathBuf> = (0..COLD_SAMPLES).map(sample).collect();
        if !residency::most_files_uncached(sampled.iter().map(PathBuf::as_path)) {
            return workers;
        }
        tracing::debug!(count, "small files not cached: more workers");
        (workers * 4).min(MAX_COLD_WORKERS).min(count)
    }

    /// The rings to copy a run's small files with, from the source device
    /// `device` to `copy_device`: when io_uring is asked for by name, and
    /// under `auto` where no engine would share extents instead (across
    /// file systems, or once a clone was found unsupported between them),
    /// because there batches beat every other route for small files on
    /// ext4 and tmpfs (see docs/PERFORMANCE.md, "io_uring small-file
    /// pipeline"). Never when a digest is asked for: a batch reads and
    /// writes unseen.
    pub(super) fn small_file_batches(&self, device: u64, copy_device: u64) -> Option<&BatchRings> {
        if self.verify.digests() {
            return None;
        }
        match self.chain.as_slice() {
            [only] => only.small_file_batches(),
            _ if self.auto && (device != copy_device || self.known.get(device).no_clone) => self
                .movers
                .iter()
                .find_map(|engine| engine.small_file_batches()),
            _ => None,
        }
    }

    /// Copies the files of `run` (all in the directories `dirs`) that suit
    /// a batch (small whole files) through `rings`, with their metadata,
    /// calling `finished` for each; returns the entries left for the
    /// ordinary way: those that do not suit, and those a batch could not
    /// copy (their partial copies removed), whose errors the ordinary way
    /// reports.
    pub(super) fn copy_in_batches<'e>(
        &self,
        rings: &BatchRings,
        run: &[&'e Entry],
        dirs: &RunDirs,
        copy_device: u64,
        finished: &dyn Fn(&Entry) -> Result<()>,
    ) -> Result<Vec<&'e Entry>> {
        // A batch copies each file's size in bytes: files whose size may
        // not be their contents' (see `copy_file`) go the ordinary way.
        let untrusted = self
            .known
            .sizes_untrusted(run[0].metadata.dev(), &dirs.source);
        let (batch, mut rest): (Vec<&Entry>, Vec<&Entry>) = run.iter().partition(|entry| {
            entry.kind == EntryKind::File
                // A batch names a file and its copy alike.
                && entry.target.is_none()
                && !untrusted
                && (1..=BATCH_FILE_MAX).contains(&entry.metadata.len())
                && !maybe_sparse(&entry.metadata)
                && !(self.preserve.links && links::has_other_names(entry))
        });
        let names: Vec<(&Path, std::ffi::CString)> = batch
            .iter()
            .map(|entry| {
                let name = FileAt::name(&entry.relative);
                let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
                (
                    name,
                    std::ffi::CString::new(bytes).expect("file names hold no NUL"),
                )
            })
            .collect();
        let files: Vec<SmallFile<'_>> = batch
            .iter()
            .zip(&names)
            .map(|(entry, (_, name))| SmallFile {
                name,
                len: entry.metadata.len(),
                mode: dirs.created_mode(&entry.metadata),
            })
            .collect();
        self.control.checkpoint()?;
        self.progress.set_current_path(&dirs.source_path);
        rings.copy(dirs.source.as_fd(), dirs.copy.as_fd(), &files, |i, outcome| {
            let (entry, name) = (batch[i], names[i].0);
            match outcome {
                SmallFileResult::Copied { registered_buffers } => {
                    metadata::carry_metadata_at(
                        dirs.copy.as_fd(),
                        name,
                        &dirs.copy_path.join(name),
                        Some(&dirs.source_path.join(name)),
                        &entry.metadata,
                        &dirs.preserve_after_create(&entry.metadata),
                    )?;
                    self.progress.add_bytes(EngineId::IoUring.name(), entry.metadata.len());
                    self.progress.add_engine_operation(EngineId::IoUring.name());
                    self.progress.note_route(
                        (entry.metadata.dev(), copy_device),
                        [(EngineId::IoUring.name(), entry.metadata.len())],
                        [route::BATCH]
                            .into_iter()
                            .chain((!registered_buffers).then_some(route::PLAIN_BUFFERS)),
                    );
                    self.control.throttle(entry.metadata.len())?;
                    finished(entry)
                }
                SmallFileResult::Failed { error, created } => {
                    tracing::debug!(%error, file = %dirs.source_path.join(name).display(), "batched copy failed; copying it alone");
                    if created {
                        match rustix::fs::unlinkat(dirs.copy.as_fd(), name, rustix::fs::AtFlags::empty()) {
                            Ok(()) | Err(Errno::NOENT) => {}
                            Err(errno) => {
                                return Err(EngineError::io("remove", &dirs.copy_path.join(name), &errno.into()))
                            }
                        }
                    }
                    rest.push(entry);
                    Ok(())
                }
            }
        })?;
        Ok(rest)
    }
}

/// The source directory of a run of files and the directory their copies
/// go to, opened once, so each file is named by one lookup of its name.
pub(super) struct RunDirs {
    pub(super) source: File,
    pub(super) copy: File,
    pub(super) source_path: std::path::PathBuf,
    pub(super) copy_path: std::path::PathBuf,
    pub(super) preserve: Preserve,
    /// Copies may be created with their final mode (see `created_mode`).
    pub(super) exact_modes: bool,
}

impl RunDirs {
    /// The directories of `run`, if all its entries are files of one
    /// directory below `source_root` (copied below `copy_root`) and both
    /// open.
    pub(super) fn open(
        run: &[&Entry],
        source_root: &Path,
        copy_root: &Path,
        preserve: Preserve,
    ) -> Option<Self> {
        let parent = run[0].relative.parent()?;
        if run
            .iter()
            .any(|e| e.kind != EntryKind::File || e.directory() != parent.as_os_str())
        {
            return None;
        }
        // One source directory's entries share one copy directory.
        let copy_parent = run[0].copy_relative().parent()?;
        let (source_path, copy_path) = (under(source_root, parent), under(copy_root, copy_parent));
        let source = open_directory(&source_path).ok()?;
        let copy = open_directory(&copy_path).ok()?;
        // Without a chown to come (which clears bits), extended attributes
        // to set (an ACL sets the mode) or a default ACL that the kernel
        // would apply instead of the mode asked for.
        let exact_modes = preserve.mode
            && !preserve.ownership
            && !preserve.xattr
            && !metadata::has_default_acl(copy.as_fd());
        Some(RunDirs {
            source,
            copy,
            source_path,
            copy_path,
            preserve,
            exact_modes,
        })
    }

    /// The mode a copy of a file with `metadata` is created with: its final
    /// mode when the kernel will give it exactly that (no bit the umask
    /// clears), which saves a chmod; else 0600, and the final mode comes
    /// when the copy is complete. Either way it is private until complete:
    /// a tree is built in directories of mode 0700 that get their own modes
    /// only at the end.
    pub(super) fn created_mode(&self, metadata: &fs::Metadata) -> u32 {
        let mode = metadata::copy_mode(metadata);
        if self.exact_modes && mode & metadata::process_umask() == 0 {
            mode
        } else {
            0o600
        }
    }

    /// What is left to carry over to a copy created with `created_mode`.
    pub(super) fn preserve_after_create(&self, metadata: &fs::Metadata) -> Preserve {
        Preserve {
            mode: self.preserve.mode && self.created_mode(metadata) == 0o600,
            ..self.preserve
        }
    }
}

/// Where one file and its copy are: by path, and relative to their run's
/// directories when it has them open.
#[derive(Clone, Copy)]
pub(super) struct FileAt<'a> {
    pub(super) source: &'a Path,
    pub(super) copy: &'a Path,
    pub(super) dirs: Option<&'a RunDirs>,
    /// The device the copy is on.
    pub(super) copy_device: u64,
}

impl FileAt<'_> {
    pub(super) fn name(path: &Path) -> &Path {
        Path::new(path.file_name().unwrap_or(path.as_os_str()))
    }

    pub(super) fn open_source(&self) -> io::Result<File> {
        match self.dirs {
            Some(dirs) => open_source_at(dirs.source.as_fd(), Self::name(self.source)),
            None => open_nofollow(self.source),
        }
    }

    /// Creates the copy, which must not exist yet.
    pub(super) fn create_copy(&self, metadata: &fs::Metadata) -> io::Result<File> {
        match self.dirs {
            Some(dirs) => {
                let flags = rustix::fs::OFlags::WRONLY
                    | rustix::fs::OFlags::CREATE
                    | rustix::fs::OFlags::EXCL
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC;
                let mode = rustix::fs::Mode::from_raw_mode(dirs.created_mode(metadata));
                let fd = rustix::fs::openat(&dirs.copy, Self::name(self.copy), flags, mode)?;
                Ok(File::from(fd))
            }
            // New files are private until complete; the final mode comes last.
            None => OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(self.copy),
        }
    }
}

/// Makes `copy` anew as what `source` is: a symlink to the same target, or
/// a FIFO, socket or device node of the same kind (and device number),
/// with the mode the copy of a file would get (`metadata::copy_mode`, no
/// setuid bits; the umask applies until the metadata is carried over).
/// Whether a device node may be made is the kernel's call: it needs
/// CAP_MKNOD, which an unprivileged job's thread does not have.
pub(super) fn make_node(entry: &Entry, source: &Path, copy: &Path) -> Result<()> {
    if entry.kind == EntryKind::Symlink {
        let link = fs::read_link(source)
            .map_err(|err| EngineError::io("read symlink", source, &err).of_one_source_file())?;
        return std::os::unix::fs::symlink(&link, copy)
            .map_err(|err| EngineError::io("create symlink", copy, &err));
    }
    let metadata = &entry.metadata;
    let file_type = rustix::fs::FileType::from_raw_mode(metadata.mode());
    let what = match file_type {
        rustix::fs::FileType::Fifo => "create FIFO",
        rustix::fs::FileType::Socket => "create socket",
        _ => "create device node",
    };
    let mode = rustix::fs::Mode::from_raw_mode(metadata::copy_mode(metadata) & 0o777);
    rustix::fs::mknodat(rustix::fs::CWD, copy, file_type, mode, metadata.rdev())
        .map_err(|errno| EngineError::io(what, copy, &errno.into()).of_one_source_file())
}

/// A tree's directories by depth (the root's level first), in walk order
/// within a level.
pub(super) fn directory_levels(entries: &[Entry]) -> Vec<Vec<&Entry>> {
    let mut levels: Vec<Vec<&Entry>> = Vec::new();
    for entry in entries.iter().filter(|e| e.kind == EntryKind::Directory) {
        let depth = entry.relative.components().count();
        if levels.len() <= depth {
            levels.resize_with(depth + 1, Vec::new);
        }
        levels[depth].push(entry);
    }
    levels.retain(|level| !level.is_empty());
    levels
}

/// Opens a directory to name entries relative to it.
pub(super) fn open_directory(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::NOFOLLOW).bits() as i32)
        .open(path)
}
