//! The engines that move a file's bytes, one module each. Every engine
//! implements [`FileCopier`](crate::copier::FileCopier); the choice among
//! them lives in [`EngineSet`](crate::copier::EngineSet).

use std::io;

use crate::copier::{is_unsupported, CopyContext, CopyError};
use crate::error::{EngineError, ErrorKind};

pub mod copy_file_range;
#[allow(unsafe_code)]
pub mod io_uring;
pub mod reflink;
pub mod splice;
pub mod standard;

pub use copy_file_range::CopyFileRangeCopier;
pub use io_uring::{IoUringConfig, IoUringCopier};
pub use reflink::ReflinkCopier;
pub use splice::SpliceCopier;
pub use standard::StandardCopier;

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
