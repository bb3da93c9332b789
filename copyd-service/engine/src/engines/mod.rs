//! The engines that move a file's bytes, one module each, behind one small
//! trait ([`FileCopier`]), with what each can do ([`EngineId`],
//! [`Capabilities`]) and the set usable here ([`EngineSet`]).
//!
//! An engine copies a byte range from one open file to another. It answers
//! [`CopyError::Unsupported`] when the kind of copy cannot happen here at all
//! (EXDEV, EOPNOTSUPP, EINVAL, ENOSYS on its first call): the caller then
//! falls through to the next engine. Any other failure is a real error of the
//! file and is never retried elsewhere.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::{EngineError, ErrorKind, Result};
use crate::progress::{Control, Progress};

mod chain;
pub mod copy_file_range;
#[allow(unsafe_code)]
pub mod io_uring;
mod kind;
pub mod reflink;
mod set;
pub mod splice;
pub mod standard;

pub use chain::{copy_with_fallback, try_chain, Unsupported};
pub use copy_file_range::CopyFileRangeCopier;
pub use io_uring::{IoUringConfig, IoUringCopier};
pub use kind::{Capabilities, EngineId};
pub use reflink::ReflinkCopier;
pub use set::{EngineSet, BYTE_MOVER_ORDER};
pub use splice::SpliceCopier;
pub use standard::StandardCopier;

/// Where an engine reports bytes and learns it must stop.
pub struct CopyContext<'a> {
    pub progress: &'a Progress,
    pub control: &'a Control,
    /// The source path, for error messages.
    pub source: &'a Path,
    /// Shown every byte an engine that has them in user space moves, in
    /// file order (a digest of the source, for verification).
    pub observer: Option<&'a dyn ByteObserver>,
}

impl CopyContext<'_> {
    /// Counts `n` bytes moved by `engine`, applies the rate limit and the
    /// pause/cancel state. Engines call it after every chunk.
    pub fn advance(&self, engine: &'static str, n: u64) -> Result<()> {
        self.progress.add_bytes(engine, n);
        self.control.throttle(n)
    }

    /// Shows the observer, if there is one, `bytes` read from `offset`.
    /// Engines call it once per byte, in file order.
    pub fn observe(&self, offset: u64, bytes: &[u8]) {
        if let Some(observer) = self.observer {
            observer.observe(offset, bytes);
        }
    }
}

/// What wants to see a file's bytes as they are copied: it is shown each
/// byte once, in file order (holes are gaps between offsets), by engines
/// whose [`Capabilities::bytes_in_user_space`] says they have them.
pub trait ByteObserver: Sync {
    fn observe(&self, offset: u64, bytes: &[u8]);
}

#[derive(Debug)]
pub enum CopyError {
    /// This engine cannot copy here; nothing was written. Try the next one.
    Unsupported(io::Error),
    /// The copy failed for real.
    Failed(EngineError),
}

impl From<EngineError> for CopyError {
    fn from(err: EngineError) -> Self {
        CopyError::Failed(err)
    }
}

/// Whether an OS error means "this kind of copy is not possible here".
pub fn is_unsupported(err: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        err.raw_os_error().map(Errno::from_raw_os_error),
        Some(
            Errno::XDEV
                | Errno::OPNOTSUPP
                | Errno::INVAL
                | Errno::NOSYS
                | Errno::NOTTY
                | Errno::BADF
        )
    )
}

pub trait FileCopier: Send + Sync {
    /// Which engine this is; what it can do is `id().capabilities()`.
    fn id(&self) -> EngineId;

    /// The name users pass as the `engine` option and see on the job.
    fn name(&self) -> &'static str {
        self.id().name()
    }

    /// Copies bytes `offset..offset + len` of `src` to the same offsets of
    /// `dst`, calling `ctx.advance` as bytes land. Returns `Unsupported`
    /// only if it wrote nothing.
    fn copy_range(
        &self,
        src: &File,
        dst: &File,
        offset: u64,
        len: u64,
        ctx: &CopyContext<'_>,
    ) -> Result<(), CopyError>;

    /// Rings that copy many small files in one go, for an engine that can
    /// (io_uring); see [`io_uring::BatchRings`].
    fn small_file_batches(&self) -> Option<&io_uring::BatchRings> {
        None
    }
}

/// The most an engine moves between two calls of `ctx.advance`: small enough
/// that pause, cancel and rate limits take effect within a fraction of a
/// second, large enough that the bookkeeping costs nothing.
pub(crate) const MAX_CHUNK: u64 = 8 << 20;

/// Sorts an OS error from an engine's system call: "not supported here" only
/// while nothing was written, since after that the next engine would see a
/// half-copied range and the caller could not tell.
pub(crate) fn classify(
    err: io::Error,
    wrote_any: bool,
    what: &str,
    ctx: &CopyContext<'_>,
) -> CopyError {
    if !wrote_any && is_unsupported(&err) {
        CopyError::Unsupported(err)
    } else {
        CopyError::Failed(EngineError::io(what, ctx.source, &err))
    }
}

/// The source ended before the range did: someone truncated it meanwhile.
pub(crate) fn shrank(ctx: &CopyContext<'_>) -> CopyError {
    CopyError::Failed(shrank_error(ctx))
}

pub(crate) fn shrank_error(ctx: &CopyContext<'_>) -> EngineError {
    EngineError::new(
        ErrorKind::Failed,
        format!("{} shrank while being copied", ctx.source.display()),
    )
}
