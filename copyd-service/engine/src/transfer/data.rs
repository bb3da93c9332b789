//! A file's data: cloned whole, or extent by extent and piece by piece
//! through the chain of engines, in one stream or several, with its durable
//! offset advancing on time.

use super::*;

impl Transfer<'_> {
    /// Whether a file's `bytes` of data go by [`read_ahead`] (read and
    /// write on two threads) rather than by the first engine of `chain`:
    /// only under `auto`, for a moderate amount of data (see
    /// READ_AHEAD_BYTES), where that engine would move the bytes through
    /// the page cache anyway: splice, io_uring, read and write, or
    /// copy_file_range into a local file system (on NFS or SMB it copies
    /// on the server, which no reading here beats).
    pub(super) fn reads_ahead(&self, chain: &[&dyn FileCopier], dst: &File, bytes: u64) -> bool {
        if !self.auto || !READ_AHEAD_BYTES.contains(&bytes) {
            return false;
        }
        match chain.first().map(|engine| engine.id().capabilities()) {
            Some(first) if first.offloads => fsutil::is_local_page_cache_fs(dst),
            Some(_) => true,
            None => false,
        }
    }

    /// Copies a file's `len` bytes: whole by an engine that shares extents,
    /// if one can here; otherwise data extent by data extent (with sparse),
    /// leaving holes as holes and counting them as done. Returns whether
    /// the copy shares the source's extents.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy_data(
        &self,
        src: &File,
        dst: &File,
        start: u64,
        len: u64,
        ctx: &CopyContext<'_>,
        offsets: &OffsetCommits<'_>,
        file: FileFacts,
    ) -> Result<bool> {
        let route = RouteNote::default();
        let cloned = self.route_data(src, dst, start, len, ctx, offsets, file, &route)?;
        let (engine_bytes, why) = route.into_parts();
        self.progress
            .note_route((file.device, file.copy_device), engine_bytes, why);
        Ok(cloned)
    }

    /// [`Self::copy_data`], telling `route` which engines moved the bytes
    /// and why.
    #[allow(clippy::too_many_arguments)]
    fn route_data(
        &self,
        src: &File,
        dst: &File,
        start: u64,
        len: u64,
        ctx: &CopyContext<'_>,
        offsets: &OffsetCommits<'_>,
        file: FileFacts,
        route: &RouteNote,
    ) -> Result<bool> {
        let known = &self.known;
        let (cloners, movers) = (&self.cloners, &self.movers);
        let skip = known.get(file.device);
        // Sharing extents is all or nothing: only for a copy from the start.
        // (Known not to work here, it is not tried, unless nothing else is.)
        let try_clone = !skip.no_clone || movers.is_empty();
        if !cloners.is_empty() && !try_clone {
            route.why(route::NO_CLONE);
        }
        if try_clone && start == 0 && !cloners.is_empty() {
            match try_chain(cloners, src, dst, 0, len, ctx)? {
                Ok(used) => {
                    route.moved(cloners[used].name(), len);
                    route.why(route::CLONED);
                    return Ok(true);
                }
                Err(unsupported) if movers.is_empty() => {
                    return Err(unsupported.into_error(ctx.source))
                }
                Err(unsupported) => {
                    route.why(route::NO_CLONE);
                    if is_unsupported_by_file_system(&unsupported.error) {
                        known.no_clone(file.device);
                    }
                }
            }
        }
        let extents = if self.sparse && file.maybe_sparse {
            sparse::data_extents(src, len)
        } else {
            std::iter::once(0..len).collect()
        };
        // An engine that could not copy one extent of this pair of files
        // cannot copy the next either, nor one of the next file from the
        // same file system: start each try where the last worked.
        let mut chain = &movers[skip.movers.min(movers.len().saturating_sub(1))..];
        // A small file's bytes are moved cheapest by one read and one write:
        // splice pays for a pipe (six calls), io_uring for submitting. (Not
        // remembered: the next file may be large.)
        let plain = |e: &&dyn FileCopier| {
            let can = e.id().capabilities();
            can.bytes_in_user_space && !can.setup_per_call
        };
        let small_path = match chain.iter().position(plain) {
            Some(at) if len - start <= SMALL_DATA => {
                let faster_for_small = chain[..at]
                    .iter()
                    .all(|e| e.id().capabilities().setup_per_call);
                if faster_for_small {
                    chain = &chain[at..];
                    route.why(route::SMALL);
                }
                faster_for_small
            }
            _ => false,
        };
        // What an earlier run made durable is not copied again; large
        // extents go in segments, so the durable offset can advance.
        let pieces = pieces_of(&extents, start, SEGMENT);
        let copied = start + pieces.iter().map(|p| p.end - p.start).sum::<u64>();
        if chain.is_empty() && !pieces.is_empty() {
            // Only an extent-sharing engine was asked for, and it shares
            // whole files: it cannot carry on a partial copy.
            return Err(EngineError::new(
                crate::error::ErrorKind::NotSupported,
                format!(
                    "cannot carry on the partial copy of {} with the engines asked for",
                    ctx.source.display()
                ),
            ));
        }
        let written_back = |piece: &std::ops::Range<u64>| {
            if file.synced && len >= LARGE_FILE {
                start_writeback(dst, piece);
            }
        };
        if len >= LARGE_FILE {
            // Read ahead further, as cp does.
            let _ = rustix::fs::fadvise(src, start, None, rustix::fs::Advice::Sequential);
        }
        // A large file that must come from the device is read by several
        // streams, piece by piece: one sequential reader leaves the device
        // mostly idle (see `residency`). A cached one gets one stream.
        // An observer sees the bytes in file order: one stream.
        let several = pieces.len() >= 2 && ctx.observer.is_none();
        if skip.movers > 0 {
            route.why(route::SKIPPED);
        }
        if self.verify.digests() {
            route.why(route::VERIFY);
        }
        let streams = match several && residency::mostly_uncached(src, &pieces) {
            true => parallel::worker_count(self.workers, pieces.len()).min(MAX_STREAMS),
            false => 1,
        };
        // Engines of `chain` that could not copy a piece of this pair of
        // files are not tried on the next (by any stream).
        let failed_engines = AtomicUsize::new(0);
        let copy_piece = |piece: &std::ops::Range<u64>| -> Result<()> {
            let skipped = failed_engines.load(Ordering::Relaxed);
            let length = piece.end - piece.start;
            match try_chain(&chain[skipped..], src, dst, piece.start, length, ctx)? {
                Ok(used) => {
                    route.moved(chain[skipped + used].name(), length);
                    if used > 0 {
                        route.why(route::FELL_THROUGH);
                    }
                    failed_engines.fetch_max(skipped + used, Ordering::Relaxed)
                }
                Err(unsupported) => return Err(unsupported.into_error(ctx.source)),
            };
            written_back(piece);
            Ok(())
        };
        let read_ahead = streams == 1 && self.reads_ahead(chain, dst, copied - start);
        if read_ahead {
            route.why(route::READ_AHEAD);
            route.moved(EngineId::Standard.name(), copied - start);
            // Told of every MiB written (it writes a MiB at a time), so the
            // offset can advance on time at any rate; writeback still goes
            // by segment.
            let parts = pieces_of(&extents, start, READ_AHEAD_PART);
            let mut written_from = start;
            read_ahead::copy_pieces(src, dst, &parts, ctx, |part| {
                let whole_segment = part.end - written_from >= SEGMENT;
                if whole_segment || pieces.iter().any(|piece| piece.end == part.end) {
                    written_back(&(written_from..part.end));
                    written_from = part.end;
                }
                offsets.maybe_commit(dst, part.end)
            })?;
        } else if streams == 1 {
            // Each piece again in parts of about PIECE_TIME, however fast the
            // bytes go, so that the offset can advance on time.
            let mut pace = Pace::new(ctx.control.rate_limit());
            for piece in &pieces {
                let mut at = piece.start;
                while at < piece.end {
                    let part = at..pace.end_of_part(at, piece.end);
                    let began = std::time::Instant::now();
                    copy_piece(&part)?;
                    pace.took(part.end - part.start, began.elapsed());
                    offsets.maybe_commit(dst, part.end)?;
                    at = part.end;
                }
            }
        } else {
            route.why(route::STREAMS);
            tracing::debug!(
                streams,
                pieces = pieces.len(),
                file = %ctx.source.display(),
                "copying an uncached file in several streams"
            );
            let finished = FinishedPieces::new(&pieces);
            let numbered: Vec<usize> = (0..pieces.len()).collect();
            // Each stream's share of the rate limit paces its parts.
            let share = ctx.control.rate_limit() / streams as u64;
            parallel::for_each(streams, &numbered, |&number| {
                // In parts of about PIECE_TIME, as one stream copies, so the
                // offset can advance on time within the leading piece.
                let piece = &pieces[number];
                let mut pace = Pace::new(share);
                let mut at = piece.start;
                while at < piece.end {
                    let part = at..pace.end_of_part(at, piece.end);
                    let began = std::time::Instant::now();
                    copy_piece(&part)?;
                    pace.took(part.end - part.start, began.elapsed());
                    at = part.end;
                    offsets.maybe_commit(dst, finished.advance(number, at))?;
                }
                Ok(())
            })?;
        }
        if !small_path && !read_ahead {
            let skipped = movers.len() - chain.len() + failed_engines.into_inner();
            known.movers_skipped(file.device, skipped);
        }
        if copied < len {
            ctx.progress.add_bytes_uncopied(len - copied);
            // Trailing holes: the copy ends where its last extent did.
            dst.set_len(len)
                .map_err(|err| EngineError::io("extend the copy of", ctx.source, &err))?;
        }
        Ok(false)
    }
}

/// `extents` from `start` on, cut into pieces of at most `size` bytes.
pub(super) fn pieces_of(
    extents: &[std::ops::Range<u64>],
    start: u64,
    size: u64,
) -> Vec<std::ops::Range<u64>> {
    let mut pieces = Vec::new();
    for extent in extents {
        let mut position = extent.start.max(start);
        while position < extent.end {
            let end = extent.end.min(position + size);
            pieces.push(position..end);
            position = end;
        }
    }
    pieces
}

/// Starts writing `range` of `copy` back to its device without waiting,
/// so the closing fdatasync or syncfs finds little left to write: the disk
/// works while the copy goes on. (POSIX_FADV_DONTNEED starts writeback of
/// dirty pages and drops the clean ones: a copy's pages are not wanted in
/// the cache. A no-op where there is no writeback, as on tmpfs.)
pub(super) fn start_writeback(copy: &File, range: &std::ops::Range<u64>) {
    if let Some(len) = std::num::NonZeroU64::new(range.end - range.start) {
        let _ = rustix::fs::fadvise(copy, range.start, Some(len), rustix::fs::Advice::DontNeed);
    }
}

/// The lengths of the parts a piece of a file is copied in: about
/// PIECE_TIME of the rate measured on the parts before (at first, of the
/// rate limit, if any), at least MIN_PIECE, at most SEGMENT, growing at most
/// twofold a part. Parts end on MIN_PIECE boundaries where they can, as
/// whole blocks suit copy_file_range's offloads and reflinks.
pub(super) struct Pace {
    pub(super) next: u64,
}

impl Pace {
    pub(super) fn new(rate_limit: u64) -> Self {
        let first = match rate_limit {
            0 => FIRST_PIECE,
            rate => (rate as f64 * PIECE_TIME.as_secs_f64()) as u64,
        };
        Pace {
            next: first.clamp(MIN_PIECE, SEGMENT),
        }
    }

    /// Where the part starting at `at` of a piece ending at `end` ends.
    pub(super) fn end_of_part(&self, at: u64, end: u64) -> u64 {
        let part_end = (at + self.next) / MIN_PIECE * MIN_PIECE;
        match part_end > at && part_end < end {
            true => part_end,
            false => end.min(at + self.next),
        }
    }

    /// A part of `len` bytes took `took`.
    pub(super) fn took(&mut self, len: u64, took: std::time::Duration) {
        let rate = len as f64 / took.as_secs_f64().max(1e-6);
        let fits = (rate * PIECE_TIME.as_secs_f64()) as u64;
        self.next = fits
            .min(self.next.saturating_mul(2))
            .clamp(MIN_PIECE, SEGMENT);
    }
}

/// How far each of a file's pieces (in file order) is copied, when several
/// streams copy them out of order: the leading run of finished pieces,
/// and what of the first unfinished one is copied, is as far as the copy
/// is complete.
pub(super) struct FinishedPieces<'a> {
    pub(super) pieces: &'a [std::ops::Range<u64>],
    /// The first piece not finished, which after it are, and how far each
    /// unfinished piece is copied.
    pub(super) state: Mutex<(
        usize,
        std::collections::BTreeSet<usize>,
        std::collections::HashMap<usize, u64>,
    )>,
}

impl<'a> FinishedPieces<'a> {
    pub(super) fn new(pieces: &'a [std::ops::Range<u64>]) -> Self {
        FinishedPieces {
            pieces,
            state: Mutex::new(Default::default()),
        }
    }

    /// Notes piece `index` copied up to `to` (finished at its end);
    /// returns the offset before which all is copied.
    pub(super) fn advance(&self, index: usize, to: u64) -> u64 {
        let mut state = self.state.lock().unwrap();
        let (first_unfinished, later, partial) = &mut *state;
        if to >= self.pieces[index].end {
            partial.remove(&index);
            later.insert(index);
        } else {
            partial.insert(index, to);
        }
        while later.remove(first_unfinished) {
            *first_unfinished += 1;
        }
        let before_first = match *first_unfinished {
            0 => 0,
            n => self.pieces[n - 1].end,
        };
        partial
            .get(first_unfinished)
            .map_or(before_first, |&to| to.max(before_first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_complete_up_to_the_first_unfinished_piece() {
        // Data at 0..10, 20..30 (a hole between), 30..40, 40..45.
        let pieces = [0..10, 20..30, 30..40, 40..45];
        let finished = FinishedPieces::new(&pieces);
        assert_eq!(finished.advance(1, 30), 0, "piece 0 is still being copied");
        assert_eq!(finished.advance(3, 45), 0);
        assert_eq!(finished.advance(0, 4), 4, "piece 0 partly copied");
        assert_eq!(finished.advance(0, 10), 30, "0 and 1 done: the hole too");
        assert_eq!(finished.advance(2, 35), 35, "piece 2 partly copied");
        assert_eq!(finished.advance(2, 40), 45);
    }
}

/// What one file's route was, gathered while its pieces are copied (by
/// several streams, maybe), then reported to `Progress::note_route`.
#[derive(Default)]
pub(super) struct RouteNote {
    engine_bytes: Mutex<Vec<(&'static str, u64)>>,
    why: Mutex<Vec<&'static str>>,
}

impl RouteNote {
    fn moved(&self, engine: &'static str, bytes: u64) {
        let mut moved = self.engine_bytes.lock().unwrap();
        match moved.iter_mut().find(|(name, _)| *name == engine) {
            Some((_, total)) => *total += bytes,
            None => moved.push((engine, bytes)),
        }
    }

    fn why(&self, reason: &'static str) {
        let mut why = self.why.lock().unwrap();
        if !why.contains(&reason) {
            why.push(reason);
        }
    }

    fn into_parts(self) -> (Vec<(&'static str, u64)>, Vec<&'static str>) {
        (
            self.engine_bytes.into_inner().unwrap(),
            self.why.into_inner().unwrap(),
        )
    }
}

/// The reasons a route report gives, in words.
pub(super) mod route {
    pub const CLONED: &str = "reflink: the copy shares the source's extents, no bytes moved";
    pub const NO_CLONE: &str =
        "no reflink: these file systems cannot share extents between these files";
    pub const SMALL: &str =
        "files of 64 KiB or less: one read and one write, cheaper than a pipe (splice) or a ring (io_uring)";
    pub const SKIPPED: &str =
        "engines found unsupported between these file systems were not tried again";
    pub const FELL_THROUGH: &str =
        "an engine answered \"not supported here\" (EXDEV, EOPNOTSUPP, EINVAL): the next one copied";
    pub const VERIFY: &str =
        "verify: only engines that have the bytes in user space (io_uring, read/write)";
    pub const READ_AHEAD: &str = "8 to 256 MiB of data: read and write on two threads (read-ahead)";
    pub const STREAMS: &str = "large and not cached: read by several streams at once";
    pub const UNTRUSTED_SIZE: &str =
        "sizes that say nothing (procfs, sysfs, some FUSE): read to the end by read/write";
    pub const BATCH: &str =
        "small files of one directory in io_uring batches: opens, reads and closes in the ring, many files per call";
    pub const PLAIN_BUFFERS: &str =
        "io_uring buffers not registered (no room under the memory lock limit): plain buffers";
}
