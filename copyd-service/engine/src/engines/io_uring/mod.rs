//! io_uring: reads and writes of one range kept in flight together through a
//! ring, into buffers registered with the kernel once (so it need not map and
//! pin user pages for every operation).
//!
//! This is the only module of the engine with `unsafe`: liburing is a C
//! library, and the kernel reads and writes our buffers while operations are
//! in flight. The invariants that keep that sound:
//!
//! * a [`Ring`] owns its buffer memory; nothing else points into it. A Rust
//!   reference to it is made only to a buffer with no operation in flight
//!   (a batch writes out what the ring read, see `batch.rs`); otherwise the
//!   kernel fills and drains it and user space never looks;
//! * every operation submitted on a ring is reaped before the ring is used for
//!   another range or dropped. If reaping itself fails, the ring is marked
//!   poisoned and its buffers are leaked rather than freed under the kernel;
//! * a ring is used by one thread at a time: the copier's pool hands it out
//!   by value.
//!
//! The copy is a small state machine over `queue_depth` slots, each one
//! buffer: a slot reads its chunk (again, for the rest, after a short read),
//! then writes it (again after a short write), then takes the next chunk. So
//! while one slot writes chunk k, others already read k+1, k+2, ...

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use rustix::io::Errno;
use uring_sys2 as sys;

use super::{classify, shrank};
use super::{CopyContext, CopyError, EngineId, FileCopier};

mod batch;

pub use batch::{
    BatchOp, BatchOps, BatchRings, SmallFile, SmallFileResult, BATCH_FILES, BATCH_FILE_MAX,
};

/// How a ring is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoUringConfig {
    /// Operations in flight at once (and buffers, one per slot).
    pub queue_depth: u32,
    /// All buffers of one ring together. 8 MiB is the default
    /// RLIMIT_MEMLOCK, the most an unprivileged process may register.
    pub buffer_bytes: usize,
}

impl Default for IoUringConfig {
    fn default() -> Self {
        IoUringConfig {
            queue_depth: 16,
            buffer_bytes: 8 << 20,
        }
    }
}

impl IoUringConfig {
    /// The size of one slot's buffer: an equal share, whole pages.
    fn slot_bytes(&self) -> usize {
        (self.buffer_bytes / self.queue_depth.max(1) as usize) & !4095
    }
}

/// The io_uring engine: a pool of rings, one per thread that copies at once.
pub struct IoUringCopier {
    config: IoUringConfig,
    /// Rings for many small files at once, where the kernel can.
    batches: Option<BatchRings>,
    pool: Mutex<Vec<Ring>>,
    /// Rings kept for reuse at most; more are dropped after use. Enough for
    /// every worker thread of a transfer on this machine.
    pool_limit: usize,
}

impl IoUringCopier {
    /// The engine, if this kernel lets us set up a ring that can read and
    /// write fixed buffers (io_uring may be missing, disabled by
    /// kernel.io_uring_disabled, or blocked by a seccomp filter).
    pub fn probe(config: IoUringConfig) -> Option<Self> {
        Self::probe_hiding(config, &[])
    }

    /// The engine as [`Self::probe`] gives it on a kernel without the batch
    /// operations `hidden` (tests of the fallbacks).
    pub fn probe_hiding(config: IoUringConfig, hidden: &[BatchOp]) -> Option<Self> {
        let config = IoUringConfig {
            queue_depth: config.queue_depth.clamp(1, 4096),
            buffer_bytes: config
                .buffer_bytes
                .max(4096 * config.queue_depth.clamp(1, 4096) as usize),
        };
        let mut ring = match Ring::new(config) {
            Ok(ring) => ring,
            Err(err) => {
                tracing::debug!(%err, "io_uring unavailable");
                return None;
            }
        };
        if !ring.supports_fixed_read_write() {
            tracing::debug!("io_uring lacks READ_FIXED/WRITE_FIXED");
            return None;
        }
        let pool_limit = crate::parallel::cpus().max(2);
        Some(IoUringCopier {
            config,
            batches: BatchRings::probe(&mut ring, pool_limit, hidden),
            pool: Mutex::new(vec![ring]),
            pool_limit,
        })
    }

    pub fn config(&self) -> IoUringConfig {
        self.config
    }

    fn take_ring(&self) -> io::Result<Ring> {
        match self.pool.lock().unwrap().pop() {
            Some(ring) => Ok(ring),
            None => Ring::new(self.config),
        }
    }

    fn give_back(&self, ring: Ring) {
        if ring.poisoned {
            return;
        }
        let mut pool = self.pool.lock().unwrap();
        if pool.len() < self.pool_limit {
            pool.push(ring);
        }
    }
}

impl FileCopier for IoUringCopier {
    fn id(&self) -> EngineId {
        EngineId::IoUring
    }

    fn small_file_batches(&self) -> Option<&BatchRings> {
        self.batches.as_ref()
    }

    fn copy_range(
        &self,
        src: &File,
        dst: &File,
        offset: u64,
        len: u64,
        ctx: &CopyContext<'_>,
    ) -> Result<(), CopyError> {
        let mut ring = match self.take_ring() {
            Ok(ring) => ring,
            // No ring now (out of memory, too many rings): nothing written.
            Err(err) => return Err(CopyError::Unsupported(err)),
        };
        let result = Pipeline::new(&mut ring, src, dst, offset, len).run(self.name(), ctx);
        self.give_back(ring);
        result
    }
}

/// One io_uring instance and its buffers.
struct Ring {
    /// Boxed so its address stays put while liburing and the kernel use it.
    raw: Box<sys::io_uring>,
    /// The buffer memory, `slots * slot_bytes` long, owned (see the module
    /// comment); from `Box::<[u8]>::into_raw`, returned to a Box in Drop.
    buffers: *mut [u8],
    slots: u32,
    slot_bytes: usize,
    /// The buffers are registered: use READ_FIXED/WRITE_FIXED.
    fixed: bool,
    /// Operations may still be in flight: never reuse, never free buffers.
    poisoned: bool,
}

// SAFETY: a Ring is only ever used by one thread at a time (the pool hands
// it out by value), it is set up without IORING_SETUP_SINGLE_ISSUER, so the
// kernel does not tie it to the creating task, and no operation is in flight
// when it changes hands (or it is poisoned and never reused).
unsafe impl Send for Ring {}

impl Ring {
    fn new(config: IoUringConfig) -> io::Result<Ring> {
        Ring::with_layout(config.queue_depth, config.queue_depth, config.slot_bytes())
    }

    /// A ring with `entries` submission entries and `slots` buffers of
    /// `slot_bytes` each.
    fn with_layout(entries: u32, slots: u32, slot_bytes: usize) -> io::Result<Ring> {
        let mut raw: Box<MaybeUninit<sys::io_uring>> = Box::new(MaybeUninit::zeroed());
        // SAFETY: `raw` points to writable memory for one `io_uring`, which
        // io_uring_queue_init fills in completely when it returns 0.
        let ret = unsafe { sys::io_uring_queue_init(entries, raw.as_mut_ptr(), 0) };
        if ret < 0 {
            return Err(io::Error::from_raw_os_error(-ret));
        }
        // SAFETY: initialised by the successful io_uring_queue_init above;
        // MaybeUninit<T> has the layout of T.
        let raw: Box<sys::io_uring> = unsafe { Box::from_raw(Box::into_raw(raw).cast()) };

        // Zeroed memory from the allocator: large, so mmap'd, and its pages
        // are only touched when registration pins them or the kernel reads
        // into them.
        let buffers = Box::into_raw(vec![0u8; slot_bytes * slots as usize].into_boxed_slice());
        let mut ring = Ring {
            raw,
            buffers,
            slots,
            slot_bytes,
            fixed: false,
            poisoned: false,
        };
        ring.fixed = ring.register_buffers();
        Ok(ring)
    }

    fn base(&self) -> *mut u8 {
        self.buffers.cast()
    }

    /// Registers one iovec per slot. Unprivileged processes may lock only
    /// RLIMIT_MEMLOCK bytes, shared by all their rings: when that is used up
    /// (ENOMEM, EPERM) the ring works with plain buffers instead.
    fn register_buffers(&mut self) -> bool {
        let iovecs: Vec<sys::iovec> = (0..self.slots as usize)
            .map(|slot| sys::iovec {
                // SAFETY (pointer arithmetic): within the allocation of
                // slots * slot_bytes bytes.
                iov_base: unsafe { self.base().add(slot * self.slot_bytes) }.cast(),
                iov_len: self.slot_bytes,
            })
            .collect();
        // SAFETY: the ring is initialised; the iovecs describe memory this
        // Ring owns and keeps alive (and in place) until queue_exit, which
        // unregisters them.
        let ret =
            unsafe { sys::io_uring_register_buffers(&mut *self.raw, iovecs.as_ptr(), self.slots) };
        if ret < 0 {
            tracing::debug!(err = %io::Error::from_raw_os_error(-ret), "io_uring buffers not registered; using plain ones");
        }
        ret == 0
    }

    /// Whether this kernel offers every operation of `opcodes`.
    fn supports(&mut self, opcodes: &[u32]) -> bool {
        // SAFETY: the ring is initialised; the probe returned is freed below.
        let probe = unsafe { sys::io_uring_get_probe_ring(&mut *self.raw) };
        if probe.is_null() {
            return false;
        }
        // SAFETY: `probe` is a valid probe from liburing until freed.
        let supported = opcodes
            .iter()
            .all(|op| unsafe { sys::io_uring_opcode_supported(probe, *op as i32) } != 0);
        // SAFETY: allocated by io_uring_get_probe_ring, freed once.
        unsafe { sys::io_uring_free_probe(probe) };
        supported
    }

    fn supports_fixed_read_write(&mut self) -> bool {
        self.supports(&[sys::IORING_OP_READ_FIXED, sys::IORING_OP_WRITE_FIXED])
    }

    /// Queues a read (`write == false`) or write of `len` bytes at file
    /// offset `offset`, from or into slot `slot` at `within` bytes in.
    fn queue(
        &mut self,
        write: bool,
        fd: i32,
        slot: u32,
        within: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<()> {
        debug_assert!(slot < self.slots && within + len <= self.slot_bytes);
        let mut sqe = self.get_sqe();
        if sqe.is_null() {
            // The submission queue is full of unsubmitted entries: hand them
            // to the kernel, which frees their places.
            self.submit(0)?;
            sqe = self.get_sqe();
            if sqe.is_null() {
                return Err(io::Error::from(Errno::BUSY));
            }
        }
        // SAFETY (pointer arithmetic): within slot `slot`, by the assertion.
        let buf = unsafe { self.base().add(slot as usize * self.slot_bytes + within) };
        let index = slot as i32;
        // SAFETY: `sqe` is a free entry of this ring; `buf..buf+len` is
        // memory this Ring owns and keeps until the operation is reaped; with
        // `fixed`, it lies within registered buffer `index`.
        unsafe {
            match (write, self.fixed) {
                (false, true) => {
                    sys::io_uring_prep_read_fixed(sqe, fd, buf.cast(), len as u32, offset, index)
                }
                (false, false) => sys::io_uring_prep_read(sqe, fd, buf.cast(), len as u32, offset),
                (true, true) => {
                    sys::io_uring_prep_write_fixed(sqe, fd, buf.cast(), len as u32, offset, index)
                }
                (true, false) => sys::io_uring_prep_write(sqe, fd, buf.cast(), len as u32, offset),
            }
            sys::io_uring_sqe_set_data64(sqe, slot as u64);
        }
        Ok(())
    }

    fn get_sqe(&mut self) -> *mut sys::io_uring_sqe {
        // SAFETY: the ring is initialised; a null result is handled by callers.
        unsafe { sys::io_uring_get_sqe(&mut *self.raw) }
    }

    /// Submits queued entries and waits for at least `wait` completions.
    fn submit(&mut self, wait: u32) -> io::Result<()> {
        loop {
            // SAFETY: the ring is initialised; entries queued were fully
            // prepared by `queue`.
            let ret = unsafe { sys::io_uring_submit_and_wait(&mut *self.raw, wait) };
            match ret {
                0.. => return Ok(()),
                _ if -ret == Errno::INTR.raw_os_error() => continue,
                _ => return Err(io::Error::from_raw_os_error(-ret)),
            }
        }
    }

    /// The next completion, if one is ready: (slot, result).
    fn reap(&mut self) -> Option<(u32, i32)> {
        self.reap_data().map(|(data, res)| (data as u32, res))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the ring was initialised in `new` and is torn down once.
        unsafe { sys::io_uring_queue_exit(&mut *self.raw) };
        if self.poisoned {
            // Operations may still be running: leak their memory rather than
            // let the kernel write into freed pages.
            return;
        }
        // SAFETY: `buffers` came from Box::into_raw in `new`, is freed once,
        // and no operation is in flight (not poisoned).
        drop(unsafe { Box::from_raw(self.buffers) });
    }
}

/// What one slot is doing with its chunk `offset..offset+len`.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Idle,
    /// `done` bytes of the chunk are in the buffer.
    Reading {
        offset: u64,
        len: usize,
        done: usize,
    },
    /// The whole chunk is in the buffer, waiting for the observer to see
    /// the chunks before it: it sees them in file order, and a chunk that
    /// was read early waits here, in its own buffer, for its turn.
    Read {
        offset: u64,
        len: usize,
    },
    /// `done` bytes of the chunk are written.
    Writing {
        offset: u64,
        len: usize,
        done: usize,
    },
}

/// One range being copied through one ring.
struct Pipeline<'r> {
    ring: &'r mut Ring,
    src: i32,
    dst: i32,
    src_file: &'r File,
    dst_file: &'r File,
    /// Transient errors retried so far in this range.
    retries: u32,
    next: u64,
    end: u64,
    slots: Vec<Slot>,
    in_flight: u32,
    wrote_any: bool,
    /// Where the observer, if any, has seen the range up to.
    observed: u64,
}

impl<'r> Pipeline<'r> {
    fn new(ring: &'r mut Ring, src: &'r File, dst: &'r File, offset: u64, len: u64) -> Self {
        let slots = vec![Slot::Idle; ring.slots as usize];
        Pipeline {
            ring,
            src: src.as_raw_fd(),
            dst: dst.as_raw_fd(),
            src_file: src,
            dst_file: dst,
            retries: 0,
            next: offset,
            end: offset + len,
            slots,
            in_flight: 0,
            wrote_any: false,
            observed: offset,
        }
    }

    fn run(mut self, engine: &'static str, ctx: &CopyContext<'_>) -> Result<(), CopyError> {
        let mut failure: Option<CopyError> = None;
        loop {
            if failure.is_none() {
                if let Err(err) = self.start_idle_slots() {
                    failure = Some(classify(err, self.wrote_any, "queue a read of", ctx));
                }
            }
            if self.in_flight == 0 {
                break;
            }
            if let Err(err) = self.ring.submit(1) {
                // Cannot submit nor wait: what is in flight cannot be
                // accounted for, so this ring must never be reused.
                self.ring.poisoned = true;
                return Err(failure.unwrap_or_else(|| classify(err, true, "copy", ctx)));
            }
            while let Some((slot, result)) = self.ring.reap() {
                self.in_flight -= 1;
                if failure.is_some() {
                    // Draining after a failure: results no longer matter.
                    self.slots[slot as usize] = Slot::Idle;
                    continue;
                }
                if let Err(err) = self.complete(slot, result, engine, ctx) {
                    failure = Some(err);
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Gives every idle slot the next chunk to read.
    fn start_idle_slots(&mut self) -> io::Result<()> {
        for slot in 0..self.slots.len() {
            if self.next >= self.end {
                break;
            }
            if matches!(self.slots[slot], Slot::Idle) {
                let len = ((self.end - self.next) as usize).min(self.ring.slot_bytes);
                self.slots[slot] = Slot::Reading {
                    offset: self.next,
                    len,
                    done: 0,
                };
                self.next += len as u64;
                self.queue(slot as u32)?;
            }
        }
        Ok(())
    }

    /// Queues the operation slot `slot` is waiting for.
    fn queue(&mut self, slot: u32) -> io::Result<()> {
        let (write, fd, offset, len, done) = match self.slots[slot as usize] {
            Slot::Idle | Slot::Read { .. } => return Ok(()),
            Slot::Reading { offset, len, done } => (false, self.src, offset, len, done),
            Slot::Writing { offset, len, done } => (true, self.dst, offset, len, done),
        };
        self.ring
            .queue(write, fd, slot, done, len - done, offset + done as u64)?;
        self.in_flight += 1;
        Ok(())
    }

    /// Shows the observer every chunk that is read and next in file order,
    /// and queues its write.
    fn observe_in_order(&mut self, ctx: &CopyContext<'_>) -> Result<(), CopyError> {
        while let Some(slot) = self
            .slots
            .iter()
            .position(|s| matches!(s, Slot::Read { offset, .. } if *offset == self.observed))
        {
            let Slot::Read { offset, len } = self.slots[slot] else {
                unreachable!("found as Read above")
            };
            // SAFETY: the slot's read was reaped and nothing is queued on
            // it until its write below, so the kernel does not touch these
            // `len` bytes (within the slot, as `queue` asserted) meanwhile;
            // the memory is this Ring's and lives as long as it.
            let bytes = unsafe {
                std::slice::from_raw_parts(self.ring.base().add(slot * self.ring.slot_bytes), len)
            };
            ctx.observe(offset, bytes);
            self.observed = offset + len as u64;
            self.slots[slot] = Slot::Writing {
                offset,
                len,
                done: 0,
            };
            self.queue(slot as u32)
                .map_err(|err| classify(err, self.wrote_any, "queue I/O for", ctx))?;
        }
        Ok(())
    }

    /// Moves slot `slot` on after its operation returned `result`.
    fn complete(
        &mut self,
        slot: u32,
        result: i32,
        engine: &'static str,
        ctx: &CopyContext<'_>,
    ) -> Result<(), CopyError> {
        let state = self.slots[slot as usize];
        if result < 0 {
            let err = io::Error::from_raw_os_error(-result);
            let policy = ctx.control.retry_policy();
            let file = match state {
                Slot::Writing { .. } => self.dst_file,
                _ => self.src_file,
            };
            if self.retries < policy.attempts && crate::retry::is_transient(&err, Some(file)) {
                // The same operation again, after the policy's wait; the
                // slot keeps its state.
                self.retries += 1;
                ctx.wait_to_retry("read or write", &err, self.retries, policy)?;
                return self
                    .queue(slot)
                    .map_err(|err| classify(err, self.wrote_any, "queue I/O for", ctx));
            }
            self.slots[slot as usize] = Slot::Idle;
            let what = if matches!(state, Slot::Writing { .. }) {
                "write the copy of"
            } else {
                "read"
            };
            return Err(classify(err, self.wrote_any, what, ctx));
        }
        let n = result as usize;
        self.slots[slot as usize] = match state {
            Slot::Idle | Slot::Read { .. } => Slot::Idle,
            Slot::Reading { .. } if n == 0 => {
                self.slots[slot as usize] = Slot::Idle;
                return Err(shrank(ctx));
            }
            Slot::Reading { offset, len, done } if done + n < len => Slot::Reading {
                offset,
                len,
                done: done + n,
            },
            Slot::Reading { offset, len, .. } if ctx.observer.is_some() => {
                self.slots[slot as usize] = Slot::Read { offset, len };
                return self.observe_in_order(ctx);
            }
            Slot::Reading { offset, len, .. } => Slot::Writing {
                offset,
                len,
                done: 0,
            },
            Slot::Writing { .. } if n == 0 => {
                self.slots[slot as usize] = Slot::Idle;
                return Err(classify(
                    io::ErrorKind::WriteZero.into(),
                    true,
                    "write the copy of",
                    ctx,
                ));
            }
            Slot::Writing { offset, len, done } if done + n < len => {
                self.wrote_any = true;
                Slot::Writing {
                    offset,
                    len,
                    done: done + n,
                }
            }
            Slot::Writing { len, .. } => {
                self.wrote_any = true;
                self.slots[slot as usize] = Slot::Idle;
                // A whole chunk landed: count it, and let pause, cancel and
                // the rate limit act while the other slots stay in flight.
                ctx.advance(engine, len as u64)?;
                return Ok(());
            }
        };
        self.queue(slot)
            .map_err(|err| classify(err, self.wrote_any, "queue I/O for", ctx))
    }
}
