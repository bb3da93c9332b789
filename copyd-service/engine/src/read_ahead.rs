//! Copying a file's data by read and write on two threads: a reader fills
//! the next buffers while the calling thread writes the last one, so the
//! two copies of read-and-write (page cache to buffer, buffer to page
//! cache) run side by side instead of one after the other.
//!
//! Where it pays: cached data of tens to a few hundred MiB, which it copies
//! faster than copy_file_range (without offload that moves the data through
//! a pipe in the kernel, a page at a time), splice, or read and write on one
//! thread. Where it does not: files of a GiB or more, when writing fresh
//! page cache is most of the time and the second CPU only competes for it.
//! Hence the bounds on its use in `transfer`. The measurements:
//! docs/PERFORMANCE.md, "Session 5 (2026-12-02)", "Reading ahead".

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Mutex};

use crate::engines::{CopyContext, EngineId};
use crate::error::{EngineError, Result};

/// Bytes read or written at once.
const CHUNK: usize = 1 << 20;
/// Buffers in flight: one being written, the rest read ahead.
const BUFFERS: usize = 3;

/// The engine the bytes are counted under: this is read and write.
const ENGINE: EngineId = EngineId::Standard;

/// Buffers kept for the next copy: fresh memory costs a page fault per
/// page on first touch (and on a VM whose host takes freed memory back,
/// the host's too), 768 of them for a file's three buffers.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Enough for two files read ahead at once (two workers).
const SPARE_MAX: usize = 2 * BUFFERS;

/// Copies `pieces` of `src` to the same offsets of `dst`, in order, and
/// calls `piece_done` with each piece's end once it is written.
pub fn copy_pieces(
    src: &File,
    dst: &File,
    pieces: &[Range<u64>],
    ctx: &CopyContext<'_>,
    mut piece_done: impl FnMut(&Range<u64>) -> Result<()>,
) -> Result<()> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<(Vec<u8>, u64)>>(BUFFERS);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    {
        let mut spare = SPARE.lock().unwrap();
        for _ in 0..BUFFERS {
            let buffer = spare.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK));
            free_tx.send(buffer).expect("the receiver is here");
        }
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            read_pieces(src, pieces, ctx, &free_rx, full_tx);
            free_rx
        });
        // The writer's ends of both channels drop when it returns, early
        // or not, and the reader stops at its next send or receive.
        let written = write_pieces(dst, pieces, ctx, full_rx, free_tx, &mut piece_done);
        // After a whole copy every buffer is back in the free channel.
        if let Ok(free) = reader.join() {
            let mut spare = SPARE.lock().unwrap();
            let room = SPARE_MAX.saturating_sub(spare.len());
            spare.extend(free.try_iter().take(room));
        }
        written
    })
}

fn read_pieces(
    src: &File,
    pieces: &[Range<u64>],
    ctx: &CopyContext<'_>,
    free: &mpsc::Receiver<Vec<u8>>,
    full: mpsc::SyncSender<Result<(Vec<u8>, u64)>>,
) {
    for piece in pieces {
        let mut position = piece.start;
        while position < piece.end {
            let Ok(mut buffer) = free.recv() else {
                return; // the writer stopped
            };
            let want = ((piece.end - position) as usize).min(CHUNK);
            buffer.resize(want, 0);
            let read = read_exactly(src, &mut buffer, position, ctx).map(|()| {
                // One reader, in file order: what an observer needs.
                ctx.observe(position, &buffer);
                (buffer, position)
            });
            let failed = read.is_err();
            if full.send(read).is_err() || failed {
                return;
            }
            position += want as u64;
        }
    }
}

fn read_exactly(src: &File, buffer: &mut [u8], at: u64, ctx: &CopyContext<'_>) -> Result<()> {
    let mut done = 0;
    while done < buffer.len() {
        let read = ctx.retrying("read", Some(src), || {
            src.read_at(&mut buffer[done..], at + done as u64)
        })?;
        match read {
            Ok(0) => return Err(crate::engines::shrank_error(ctx)),
            Ok(n) => done += n,
            Err(err) => return Err(EngineError::io("read", ctx.source, &err)),
        }
    }
    Ok(())
}

fn write_pieces(
    dst: &File,
    pieces: &[Range<u64>],
    ctx: &CopyContext<'_>,
    full: mpsc::Receiver<Result<(Vec<u8>, u64)>>,
    free: mpsc::Sender<Vec<u8>>,
    piece_done: &mut impl FnMut(&Range<u64>) -> Result<()>,
) -> Result<()> {
    let mut pieces = pieces.iter().peekable();
    for read in full {
        let (buffer, at) = read?;
        crate::engines::standard::write_all_at(dst, &buffer, at, ctx)?;
        let end = at + buffer.len() as u64;
        // A send fails only once the reader is done: nothing left to read.
        let _ = free.send(buffer);
        ctx.advance(ENGINE.name(), end - at)?;
        if let Some(piece) = pieces.next_if(|piece| piece.end == end) {
            piece_done(piece)?;
        }
    }
    match pieces.next() {
        None => Ok(()),
        // The reader ended without an error before the last piece: it
        // cannot, short of a bug.
        Some(piece) => Err(EngineError::new(
            crate::error::ErrorKind::Failed,
            format!(
                "reading ahead {} stopped before offset {}",
                ctx.source.display(),
                piece.end
            ),
        )),
    }
}
