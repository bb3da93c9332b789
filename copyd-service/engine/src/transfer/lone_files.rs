//! Small lone files in a row (`copy *.jpg dir/`), copied as a group that
//! shares its flushes: one for their `Started` lines, one for their `Built`
//! lines, one syncfs.

use super::*;

impl Transfer<'_> {
    /// Whether `item` is one small regular file that may be copied in a
    /// group with its neighbours ([`Self::copy_lone_files`]): not when an
    /// earlier run left its partial copy to carry on from.
    pub(super) fn is_small_lone_file(&self, index: usize, item: &Item, tree: &Tree) -> bool {
        // A file with other names goes alone, in order: a later item may be
        // one of them, to be linked to its copy once placed.
        let lone_file = matches!(&tree.entries[..], [entry] if entry.kind == EntryKind::File
            && !(self.preserve.links && links::has_other_names(entry)));
        let carry_on = self.resume.started.contains(&index)
            && self.own_leftover(
                &fsutil::temp_path(&item.target, self.tag, index),
                item,
                index,
            );
        lone_file && tree.bytes < LARGE_FILE && !carry_on && !item.merge
    }

    /// Copies small lone files as a group, built on the workers, and with
    /// sync sharing the flushes each would make alone (its Started line,
    /// its fdatasync, its directory's fsync), which made each file cost
    /// several times what cp+sync takes (see docs/PERFORMANCE.md, "Grouped
    /// small lone files"). Their Started lines go in one flush; the copies
    /// are built under their temporary names, then made
    /// durable by one syncfs per file system, renamed, and their
    /// directories fsynced once each (for moves, the sources deleted after,
    /// one fsync per source directory). What is built is placed at least
    /// every GROUP_COMMIT_INTERVAL, so a crash loses little work.
    ///
    /// On an error, the files whose building had begun (every file before
    /// it, maybe one after it on the other worker) are placed first, then
    /// the error returns. Returns how many were placed.
    pub(super) fn copy_lone_files(&self, group: &[(usize, &Item, Tree)]) -> Result<usize> {
        let indices: Vec<usize> = group.iter().map(|(index, ..)| *index).collect();
        self.journal.items_started(&indices);
        // Each file's directories, opened once for the whole group.
        let mut dirs = OpenDirs::default();
        let places = group
            .iter()
            .map(|(_, item, _)| {
                let source_dir = match self.operation {
                    Operation::Move => Some(dirs.open(parent_of(&item.source))?),
                    Operation::Copy => None,
                };
                Ok((dirs.open(parent_of(&item.target))?, source_dir))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut placed = 0;
        let mut pending: Vec<usize> = (0..group.len()).collect();
        while !pending.is_empty() {
            let (built, failed, left) = self.build_round(group, &places, &pending);
            let placing = self.place_together(&built);
            // Files that fail alone (on-error continue) are listed and the
            // group goes on; anything else ends it.
            let (alone, fatal): (Vec<_>, Vec<_>) = failed
                .into_iter()
                .partition(|(_, err)| self.fails_alone(err));
            for (position, err) in alone {
                let (_, item, tree) = &group[position];
                self.count_failed_item(tree);
                self.fail_alone(&item.source, &item.target, err);
            }
            if let Some((_, err)) = fatal.into_iter().next() {
                if let Err(placing) = placing {
                    tracing::warn!(%placing, "could not place the files copied before an error");
                }
                return Err(err);
            }
            placing?;
            placed += built.len();
            pending = left;
        }
        Ok(placed)
    }

    /// Builds the files of `group` at positions `pending` on the workers,
    /// in order, until one fails or GROUP_COMMIT_INTERVAL has passed.
    /// Returns the files built, the failures (by position, in order), and
    /// the positions left for the next round.
    #[allow(clippy::type_complexity)]
    pub(super) fn build_round<'i>(
        &self,
        group: &[(usize, &'i Item, Tree)],
        places: &[(Arc<AnchoredDir>, Option<Arc<AnchoredDir>>)],
        pending: &[usize],
    ) -> (Vec<LoneFile<'i>>, Vec<(usize, EngineError)>, Vec<usize>) {
        let since = std::time::Instant::now();
        let slots: Vec<Mutex<Option<Result<LoneFile<'i>>>>> =
            pending.iter().map(|_| Mutex::new(None)).collect();
        let numbered: Vec<usize> = (0..pending.len()).collect();
        let workers = self.workers_for_small_files(
            parallel::worker_count(self.workers, pending.len()),
            pending.len(),
            |k| {
                group[pending[k * pending.len() / COLD_SAMPLES]]
                    .1
                    .source
                    .clone()
            },
        );
        let _stopped = parallel::for_each(workers, &numbered, |&n| {
            // The first is always built, so every round makes progress.
            if n > 0 && since.elapsed() >= GROUP_COMMIT_INTERVAL {
                return Ok(()); // for the next round
            }
            let (index, item, tree) = &group[pending[n]];
            let (anchor, source_dir) = &places[pending[n]];
            let result = self.build_lone_file(*index, item, tree, anchor, source_dir);
            let failed = result.is_err();
            *slots[n].lock().unwrap() = Some(result);
            match failed {
                // Stops the workers claiming more; the error is in its slot.
                true => Err(EngineError::cancelled()),
                false => Ok(()),
            }
        });
        let (mut built, mut failed, mut left) = (Vec::new(), Vec::new(), Vec::new());
        for (slot, &position) in slots.into_iter().zip(pending) {
            match slot.into_inner().unwrap() {
                Some(Ok(lone)) => built.push(lone),
                Some(Err(err)) => failed.push((position, err)),
                None => left.push(position),
            }
        }
        (built, failed, left)
    }

    /// Builds a lone file of a group under its temporary name, not synced.
    pub(super) fn build_lone_file<'i>(
        &self,
        index: usize,
        item: &'i Item,
        tree: &Tree,
        anchor: &Arc<AnchoredDir>,
        source_dir: &Option<Arc<AnchoredDir>>,
    ) -> Result<LoneFile<'i>> {
        let (temp, target) = self.names_in(anchor, item, index);
        self.clear_leftover(&temp, item, index)
            .map_err(|err| anchor.explain(err))?;
        if let Err(err) = self.build(item, index, tree, &temp, false, false) {
            self.discard(&temp);
            return Err(anchor.explain(err));
        }
        Ok(LoneFile {
            index,
            item,
            anchor: Arc::clone(anchor),
            temp,
            target,
            source_dir: source_dir.clone(),
        })
    }

    /// Makes `built` durable with one syncfs per file system, renames each
    /// into place and fsyncs their directories once each (the flushes only
    /// with sync); for moves, then deletes the sources. A rename that fails
    /// stops the renames, and the copies not renamed are discarded; those
    /// renamed stay, made durable.
    pub(super) fn place_together(&self, built: &[LoneFile<'_>]) -> Result<()> {
        if self.sync {
            if let Err(err) = sync_each_file_system(built.iter().map(|lone| &*lone.anchor)) {
                built.iter().for_each(|lone| self.discard(&lone.temp));
                return Err(err);
            }
        }
        let identities = built
            .iter()
            .map(|lone| {
                if lone.item.replace {
                    self.take_replaced_attributes(&lone.temp, &lone.target)?;
                }
                Ok((lone.index, built_identity(&lone.temp)?))
            })
            .collect::<Result<Vec<_>>>();
        match identities {
            Ok(identities) => self.journal.items_built(&identities),
            Err(err) => {
                built.iter().for_each(|lone| self.discard(&lone.temp));
                return Err(err);
            }
        }
        let mut failed = None;
        let mut renamed = 0;
        for lone in built {
            if let Err(err) = fsutil::rename_into_place(&lone.temp, &lone.target, lone.item.replace)
            {
                failed = Some(lone.anchor.explain(err));
                break;
            }
            if lone.item.replace {
                self.progress.note_conflict(ConflictDecision::Overwritten);
            }
            renamed += 1;
        }
        built[renamed..]
            .iter()
            .for_each(|lone| self.discard(&lone.temp));
        let placed = &built[..renamed];
        if self.sync {
            sync_each_directory(placed.iter().map(|lone| &*lone.anchor))?;
        }
        let reports = self.progress.placed();
        for lone in placed {
            reports.note(Action::Copied, false, &lone.item.source, &lone.item.target);
        }
        for lone in placed {
            if let Some(source_dir) = &lone.source_dir {
                remove_moved_source_in(source_dir, lone.item)?;
                reports.note(Action::Removed, false, &lone.item.source, Path::new(""));
            }
        }
        sync_each_directory(placed.iter().filter_map(|lone| lone.source_dir.as_deref()))?;
        let done: Vec<usize> = placed.iter().map(|lone| lone.index).collect();
        self.journal.items_done(&done);
        failed.map_or(Ok(()), Err)
    }
}

/// A lone file of a group, built under its temporary name.
pub(super) struct LoneFile<'i> {
    pub(super) index: usize,
    pub(super) item: &'i Item,
    /// The target's directory, opened before the copy.
    pub(super) anchor: Arc<AnchoredDir>,
    pub(super) temp: PathBuf,
    pub(super) target: PathBuf,
    /// For a move, the source's directory, opened before the copy.
    pub(super) source_dir: Option<Arc<AnchoredDir>>,
}
