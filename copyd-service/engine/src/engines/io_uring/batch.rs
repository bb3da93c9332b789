//! Many small files through one ring.
//!
//! For a tree of small files the cost is in the calls per file, not in the
//! bytes: a file copied by plain calls takes an open, a check of what was
//! opened, a create, a read (and one more to see the end), a write and two
//! closes, each a trip into the kernel. A batch takes up to BATCH_FILES
//! files of one directory and splits each file's work between the ring and
//! the thread, by what the kernel can do inline:
//!
//! 1. the thread creates every copy (relative to the copy's directory);
//! 2. one submission: per file, open the source (relative to its
//!    directory's descriptor) into a direct descriptor, linked to a read of
//!    the whole file into the file's buffer;
//! 3. the thread writes each buffer to its copy;
//! 4. one submission closes every copy and every source.
//!
//! Why not all of it in the ring: the kernel never creates a file inline,
//! and it hands buffered writes to ext4 and tmpfs to its io-wq threads
//! too; on two CPUs those hand-offs cost more than the calls they save
//! (see docs/PERFORMANCE.md, "io_uring small-file pipeline"). Opens by
//! name from the dentry cache, reads from the page cache and closes run
//! inline, in the submitting call.
//!
//! Direct descriptors (the ring's own file table) let a read name a file
//! whose open is still in the queue; they never enter the process's
//! descriptor table, and the next chunk's opens replace them. Linked: a
//! failed open cancels its read, and a read that comes back short counts
//! as failed, so a vanished, unreadable or shrinking file is not written,
//! and the caller copies that one file again the ordinary way, which
//! reports its error.
//!
//! Sources are opened without waiting (O_NONBLOCK): a file swapped for a
//! FIFO since the walk must not hold the ring (and its io-wq thread) until
//! a writer comes; its read then finds nothing and the chain fails, and the
//! ordinary way refuses it (`fsutil::open_source_at`). A regular file's
//! read ignores the flag where the file system can read without waiting
//! (ext4, xfs, btrfs, tmpfs: io_uring then waits in io-wq as it would
//! anyway); where it cannot, the read says EAGAIN and the file goes the
//! ordinary way.
//!
//! Credentials: the ring's operations that the kernel hands to io-wq run
//! with the credentials of the thread that submitted them, and the thread's
//! own calls are its own, so a batch run by a worker acting as the caller
//! opens and creates as the caller (tests/batch.rs checks it).
//!
//! Where the kernel lacks an operation (see [`BatchOps`]), the thread does
//! that step itself; without OPENAT or READ there are no batches.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::Mutex;

use rustix::fs::OFlags;
use rustix::io::Errno;
use uring_sys2 as sys;

use super::Ring;

/// Files a batch submits at once: two submission entries and two direct
/// descriptors each.
pub const BATCH_FILES: usize = 32;

/// The largest file a batch copies: one buffer.
pub const BATCH_FILE_MAX: u64 = 64 << 10;

/// One small file to copy whole: its name in the source directory (its
/// copy's name in the copy's directory too), its length, and the mode its
/// copy is created with.
#[derive(Debug, Clone, Copy)]
pub struct SmallFile<'a> {
    pub name: &'a CStr,
    pub len: u64,
    pub mode: u32,
}

/// How the batch left one file.
#[derive(Debug)]
pub enum SmallFileResult {
    /// Copied whole; `registered_buffers` says whether through buffers
    /// registered with the kernel (not when the memory lock limit had no
    /// room for them).
    Copied { registered_buffers: bool },
    /// Not copied; `created` says whether a (partial) copy may have been
    /// created, which the caller removes before copying the file again.
    Failed { error: io::Error, created: bool },
}

/// The io_uring operations a batch may use, for [`BatchOps::probe`] and for
/// tests that take one away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp {
    OpenAt,
    Read,
    Close,
}

impl BatchOp {
    fn opcode(self) -> u32 {
        match self {
            BatchOp::OpenAt => sys::IORING_OP_OPENAT,
            BatchOp::Read => sys::IORING_OP_READ,
            BatchOp::Close => sys::IORING_OP_CLOSE,
        }
    }
}

/// Which steps the ring does, as this kernel allows; the thread does the
/// rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOps {
    /// Close each copy and each source in the ring (IORING_OP_CLOSE,
    /// kernel 5.6; direct descriptors, 5.15). Without, the thread closes
    /// the copies, and the sources close when the ring's descriptor table
    /// is dropped after each batch (two more calls).
    pub close_in_ring: bool,
}

impl BatchOps {
    /// The steps this kernel offers, as `ring` (any ring of it) says, with
    /// the operations `hidden` taken as missing. None without OPENAT or
    /// READ (kernel 5.6), which a batch cannot do without.
    fn probe(ring: &mut Ring, hidden: &[BatchOp]) -> Option<BatchOps> {
        let mut has = |op: BatchOp| !hidden.contains(&op) && ring.supports(&[op.opcode()]);
        if !has(BatchOp::OpenAt) || !has(BatchOp::Read) {
            return None;
        }
        Some(BatchOps {
            close_in_ring: has(BatchOp::Close),
        })
    }
}

/// The rings for batches, one per thread copying at once, set up on first
/// use.
pub struct BatchRings {
    ops: BatchOps,
    pool: Mutex<Vec<Ring>>,
    pool_limit: usize,
}

impl BatchRings {
    /// Batches, if `ring` (any ring of this kernel) says it can open and
    /// read files (less the operations `hidden`). Direct descriptors need
    /// kernel 5.15: where they are missing, setting up a batch ring fails
    /// on first use and the files go the ordinary way.
    pub(super) fn probe(ring: &mut Ring, pool_limit: usize, hidden: &[BatchOp]) -> Option<Self> {
        let Some(ops) = BatchOps::probe(ring, hidden) else {
            tracing::debug!("io_uring batches unavailable");
            return None;
        };
        Some(BatchRings {
            ops,
            pool: Mutex::new(Vec::new()),
            pool_limit,
        })
    }

    /// The steps the ring takes.
    pub fn ops(&self) -> BatchOps {
        self.ops
    }

    /// Copies `files` (from the directory `source_dir` to `copy_dir`),
    /// calling `finished(i, result)` for each file `i` once it is done, in
    /// chunks of BATCH_FILES. Every file is reported, failed ones too when
    /// the ring itself fails; an `Err` is `finished`'s own, which stops the
    /// batch.
    pub fn copy(
        &self,
        source_dir: BorrowedFd<'_>,
        copy_dir: BorrowedFd<'_>,
        files: &[SmallFile<'_>],
        mut finished: impl FnMut(usize, SmallFileResult) -> crate::error::Result<()>,
    ) -> crate::error::Result<()> {
        let pooled = self.pool.lock().unwrap().pop();
        let mut ring = match pooled.map_or_else(Ring::for_batches, Ok) {
            Ok(ring) => ring,
            Err(err) => {
                // No ring now (out of memory, too many rings, an old
                // kernel): nothing was tried; the ordinary way copies them.
                tracing::debug!(%err, "no io_uring for a batch");
                return report_failed(0..files.len(), &err, false, &mut finished);
            }
        };
        let mut result = Ok(());
        // Whether a source may still be open in the ring's descriptor
        // table once the batch is over.
        let mut sources_open = !self.ops.close_in_ring;
        for (chunk_index, chunk) in files.chunks(BATCH_FILES).enumerate() {
            let start = chunk_index * BATCH_FILES;
            result = match ring.copy_chunk(self.ops, source_dir, copy_dir, chunk) {
                Ok((outcomes, left_open)) => {
                    sources_open |= left_open;
                    outcomes
                        .into_iter()
                        .enumerate()
                        .try_for_each(|(offset, outcome)| finished(start + offset, outcome))
                }
                // The ring is unusable (and poisoned): the rest go the
                // ordinary way. Whether a file of this chunk has a copy
                // is unknown: the caller removes any copy it finds.
                Err(err) => report_failed(start..files.len(), &err, true, &mut finished),
            };
            if result.is_err() || ring.poisoned {
                break;
            }
        }
        if !ring.poisoned && (!sources_open || ring.release_files().is_ok()) {
            let mut pool = self.pool.lock().unwrap();
            if pool.len() < self.pool_limit {
                pool.push(ring);
            }
        }
        result
    }
}

/// Reports the files `range` of a batch as failed by `err`.
fn report_failed(
    range: std::ops::Range<usize>,
    err: &io::Error,
    created: bool,
    finished: &mut impl FnMut(usize, SmallFileResult) -> crate::error::Result<()>,
) -> crate::error::Result<()> {
    range.into_iter().try_for_each(|i| {
        let error = io::Error::new(err.kind(), err.to_string());
        finished(i, SmallFileResult::Failed { error, created })
    })
}

/// One submission entry of a file's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    OpenSource = 0,
    Read = 1,
    CloseCopy = 2,
    CloseSource = 3,
}

impl Step {
    /// The step a completion's user data names (its low two bits).
    fn from_data(data: u64) -> Step {
        match data & 3 {
            0 => Step::OpenSource,
            1 => Step::Read,
            2 => Step::CloseCopy,
            _ => Step::CloseSource,
        }
    }
}

/// One chunk of a batch on its way.
struct Chunk<'a, 'n> {
    /// The source directory and the copy's.
    dirs: (BorrowedFd<'a>, BorrowedFd<'a>),
    files: &'a [SmallFile<'n>],
    chains: Vec<Chain>,
    /// The copies' descriptors, closed when this drops unless the ring
    /// closed them.
    copies: Vec<Option<OwnedFd>>,
}

/// What one file's chain has come to so far.
#[derive(Debug, Default, Clone, Copy)]
struct Chain {
    created: bool,
    /// Its source is open in its direct descriptor slot.
    source_open: bool,
    /// The first failure, as an errno; 0 for none. ECANCELED (what the
    /// links after a failure get) only if nothing failed before it.
    errno: i32,
    /// The first failure was a short read: the file changed size.
    short: bool,
}

impl Chain {
    fn result(self, registered_buffers: bool) -> SmallFileResult {
        match (self.errno, self.short) {
            (0, _) => SmallFileResult::Copied { registered_buffers },
            (_, true) => SmallFileResult::Failed {
                error: io::Error::other("the file changed size while being copied"),
                created: self.created,
            },
            (errno, false) => SmallFileResult::Failed {
                error: io::Error::from_raw_os_error(errno),
                created: self.created,
            },
        }
    }
}

impl Chunk<'_, '_> {
    /// Creates every file's copy: new (never an existing file, never
    /// through a symlink), for writing.
    fn create_copies(&mut self) {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for (i, file) in self.files.iter().enumerate() {
            let mode = rustix::fs::Mode::from_raw_mode(file.mode);
            match rustix::fs::openat(self.dirs.1, file.name, flags, mode) {
                Ok(fd) => {
                    self.copies[i] = Some(fd);
                    self.chains[i].created = true;
                }
                Err(errno) => self.chains[i].errno = errno.raw_os_error(),
            }
        }
    }

    /// Takes the completion `res` of `step` of file `i`'s chain.
    fn completed(&mut self, i: usize, step: Step, res: i32) {
        let canceled = -Errno::CANCELED.raw_os_error();
        match step {
            Step::OpenSource if res >= 0 => self.chains[i].source_open = true,
            // A source that would not close stays in its slot until the
            // table is dropped; it says nothing of the copy.
            Step::CloseSource => {
                self.chains[i].source_open &= res < 0;
                return;
            }
            _ => {}
        }
        if step == Step::CloseCopy && res != canceled {
            // The ring took it out of the descriptor table, even if closing
            // then failed: never closed again.
            if let Some(fd) = self.copies[i].take() {
                let _ = fd.into_raw_fd();
            }
        }
        let chain = &mut self.chains[i];
        let short = step == Step::Read && res >= 0 && (res as u64) < self.files[i].len;
        if res < 0 && (chain.errno == 0 || chain.errno == -canceled) {
            chain.errno = -res;
        } else if short && chain.errno == 0 {
            chain.short = true;
            chain.errno = Errno::IO.raw_os_error();
        }
    }
}

/// Writes all of `bytes` at the start of the file `fd`.
fn write_whole(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), Errno> {
    let mut offset = 0;
    while !bytes.is_empty() {
        match rustix::io::pwrite(fd, bytes, offset) {
            Ok(0) => return Err(Errno::NOSPC),
            Ok(n) => {
                bytes = &bytes[n..];
                offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

impl Ring {
    /// A ring for batches: two entries per file, one buffer of
    /// BATCH_FILE_MAX per file, a direct descriptor table of two per file.
    fn for_batches() -> io::Result<Ring> {
        let files = BATCH_FILES as u32;
        let mut ring = Ring::with_layout(2 * files, files, BATCH_FILE_MAX as usize)?;
        ring.register_file_slots()?;
        Ok(ring)
    }

    /// Sets up an empty direct descriptor table, two per file.
    fn register_file_slots(&mut self) -> io::Result<()> {
        // SAFETY: the ring is initialised; a sparse table takes no pointers.
        let ret =
            unsafe { sys::io_uring_register_files_sparse(&mut *self.raw, 2 * BATCH_FILES as u32) };
        if ret < 0 {
            return Err(io::Error::from_raw_os_error(-ret));
        }
        Ok(())
    }

    /// Closes every file the batches left in the direct descriptor table
    /// (dropping the table and setting up an empty one), so no source stays
    /// open once its batch is over.
    fn release_files(&mut self) -> io::Result<()> {
        // SAFETY: the ring is initialised and no operation is in flight.
        let ret = unsafe { sys::io_uring_unregister_files(&mut *self.raw) };
        if ret < 0 {
            self.poisoned = true;
            return Err(io::Error::from_raw_os_error(-ret));
        }
        self.register_file_slots()
            .inspect_err(|_| self.poisoned = true)
    }

    /// Copies up to BATCH_FILES files, in the four steps of the module
    /// comment: each file's result, and whether a source is left open in
    /// the ring's descriptor table. Every completion is reaped before this
    /// returns, so nothing is in flight afterwards (or the ring is
    /// poisoned).
    fn copy_chunk(
        &mut self,
        ops: BatchOps,
        source_dir: BorrowedFd<'_>,
        copy_dir: BorrowedFd<'_>,
        files: &[SmallFile<'_>],
    ) -> io::Result<(Vec<SmallFileResult>, bool)> {
        assert!(files.len() <= BATCH_FILES && files.len() <= self.slots as usize);
        let mut chunk = Chunk {
            dirs: (source_dir, copy_dir),
            files,
            chains: vec![Chain::default(); files.len()],
            copies: (0..files.len()).map(|_| None).collect(),
        };
        chunk.create_copies();
        let mut result = self.run_steps(&mut chunk, &[Step::OpenSource, Step::Read]);
        if result.is_ok() {
            self.write_copies(&mut chunk);
            if ops.close_in_ring {
                result = self.close_all(&mut chunk);
            }
        }
        if let Err(err) = result {
            // Cannot wait for what is in flight: never reuse this ring.
            // The copies' descriptors are leaked with it: the ring may
            // still close them.
            self.poisoned = true;
            chunk
                .copies
                .into_iter()
                .flatten()
                .for_each(std::mem::forget);
            return Err(err);
        }
        // What the ring did not close (no close in the ring, or a close
        // it refused) closes here, as `copies` drops.
        let registered = self.fixed;
        let sources_open = chunk.chains.iter().any(|chain| chain.source_open);
        let results = chunk
            .chains
            .into_iter()
            .map(|chain| chain.result(registered));
        Ok((results.collect(), sources_open))
    }

    /// Closes every copy and every source of `chunk` that is open, failed
    /// chains' too, in one submission.
    fn close_all(&mut self, chunk: &mut Chunk<'_, '_>) -> io::Result<()> {
        let mut in_flight = 0u32;
        for i in 0..chunk.files.len() {
            let steps = [
                (chunk.copies[i].is_some(), Step::CloseCopy),
                (chunk.chains[i].source_open, Step::CloseSource),
            ];
            for step in steps
                .into_iter()
                .filter_map(|(open, step)| open.then_some(step))
            {
                let sqe = self.get_sqe();
                if sqe.is_null() {
                    // Sized for two entries per file: cannot happen.
                    return Err(io::Error::from(Errno::BUSY));
                }
                self.prepare(sqe, chunk, i, step, false);
                in_flight += 1;
            }
        }
        self.reap_all(chunk, in_flight)
    }

    /// Submits what is queued and reaps `in_flight` completions into
    /// `chunk`.
    fn reap_all(&mut self, chunk: &mut Chunk<'_, '_>, mut in_flight: u32) -> io::Result<()> {
        while in_flight > 0 {
            self.submit(1)?;
            while let Some((data, res)) = self.reap_data() {
                in_flight -= 1;
                chunk.completed((data >> 2) as usize, Step::from_data(data), res);
            }
        }
        Ok(())
    }

    /// Queues `steps`, linked, for every file of `chunk` whose chain has
    /// not failed, submits them, and reaps every completion.
    fn run_steps(&mut self, chunk: &mut Chunk<'_, '_>, steps: &[Step]) -> io::Result<()> {
        let mut in_flight = 0u32;
        for i in 0..chunk.files.len() {
            if chunk.chains[i].errno != 0 {
                continue;
            }
            for (n, &step) in steps.iter().enumerate() {
                let sqe = self.get_sqe();
                if sqe.is_null() {
                    // Sized for every step of every file: cannot happen, but
                    // must not be written through. Entries already
                    // prepared would go out with the next submission:
                    // this ring is not used again.
                    return Err(io::Error::from(Errno::BUSY));
                }
                self.prepare(sqe, chunk, i, step, n + 1 < steps.len());
                in_flight += 1;
            }
        }
        self.reap_all(chunk, in_flight)
    }

    /// Fills `sqe` with `step` of file `i`'s chain, linked to the next
    /// entry when `linked`.
    fn prepare(
        &mut self,
        sqe: *mut sys::io_uring_sqe,
        chunk: &Chunk<'_, '_>,
        i: usize,
        step: Step,
        linked: bool,
    ) {
        let file = &chunk.files[i];
        let source_slot = 2 * i as u32;
        // SAFETY (pointer arithmetic): buffer `i` lies within the ring's
        // allocation (i < slots, asserted by `copy_chunk`).
        let buf = unsafe { self.base().add(i * self.slot_bytes) };
        let len = file.len as u32;
        // SAFETY: `sqe` is a free entry of this ring. The source's name is
        // copied by the kernel when the entry is submitted (in
        // `run_steps`), before it can go away. `buf` is this Ring's memory
        // for file `i` (`len` fits: the caller's files are at most one
        // buffer), kept until every completion of the chunk is reaped; with
        // `fixed`, it lies in registered buffer `i`. The descriptor slot
        // exists: the table has two per file. The copy's descriptor stays
        // open in `chunk.copies` until its close is reaped.
        unsafe {
            let mut fixed_file = false;
            match step {
                Step::OpenSource => sys::io_uring_prep_openat_direct(
                    sqe,
                    chunk.dirs.0.as_raw_fd(),
                    file.name.as_ptr(),
                    (OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32,
                    0,
                    source_slot,
                ),
                Step::Read if self.fixed => {
                    fixed_file = true;
                    let slot = source_slot as i32;
                    sys::io_uring_prep_read_fixed(sqe, slot, buf.cast(), len, 0, i as i32);
                }
                Step::Read => {
                    fixed_file = true;
                    sys::io_uring_prep_read(sqe, source_slot as i32, buf.cast(), len, 0);
                }
                Step::CloseCopy => {
                    let fd = chunk.copies[i].as_ref().map_or(-1, |fd| fd.as_raw_fd());
                    sys::io_uring_prep_close(sqe, fd);
                }
                Step::CloseSource => sys::io_uring_prep_close_direct(sqe, source_slot),
            }
            let mut flags = 0;
            if fixed_file {
                flags |= 1 << sys::IOSQE_FIXED_FILE_BIT;
            }
            if linked {
                flags |= 1 << sys::IOSQE_IO_LINK_BIT;
            }
            sys::io_uring_sqe_set_flags(sqe, flags);
            sys::io_uring_sqe_set_data64(sqe, (i as u64) << 2 | step as u64);
        }
    }

    /// Writes each file of `chunk` that the ring read whole, from its
    /// buffer to its copy, on this thread.
    fn write_copies(&mut self, chunk: &mut Chunk<'_, '_>) {
        for i in 0..chunk.files.len() {
            let (Some(copy), 0) = (&chunk.copies[i], chunk.chains[i].errno) else {
                continue;
            };
            let len = chunk.files[i].len as usize;
            // SAFETY: buffer `i` lies within the ring's allocation and no
            // operation on it is in flight: its read was reaped by
            // `run_steps`, and nothing is queued until this returns. Only
            // its first `len` bytes are looked at, all written by that read
            // (it read them all, or the chain failed and is skipped here).
            let bytes =
                unsafe { std::slice::from_raw_parts(self.base().add(i * self.slot_bytes), len) };
            if let Err(errno) = write_whole(copy.as_fd(), bytes) {
                // Any failure, transient ones too: the ordinary way copies
                // the file again, with its retries.
                chunk.chains[i].errno = errno.raw_os_error();
            }
        }
    }

    /// The next completion, if one is ready: (user data, result).
    pub(super) fn reap_data(&mut self) -> Option<(u64, i32)> {
        let mut cqe: *mut sys::io_uring_cqe = std::ptr::null_mut();
        // SAFETY: the ring is initialised; `cqe` is an out pointer.
        let ret = unsafe { sys::io_uring_peek_cqe(&mut *self.raw, &mut cqe) };
        if ret < 0 || cqe.is_null() {
            return None;
        }
        // SAFETY: peek_cqe returned a valid completion, which we read once
        // and then hand back to the ring with cqe_seen.
        unsafe {
            let completion = ((*cqe).user_data, (*cqe).res);
            sys::io_uring_cqe_seen(&mut *self.raw, cqe);
            Some(completion)
        }
    }
}
