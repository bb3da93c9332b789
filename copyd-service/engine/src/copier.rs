//! The engines that move a file's bytes, behind one small trait, and the
//! choice among them.
//!
//! An engine copies a byte range from one open file to another. It answers
//! [`CopyError::Unsupported`] when the kind of copy cannot happen here at all
//! (EXDEV, EOPNOTSUPP, EINVAL, ENOSYS on its first call): the caller then
//! falls through to the next engine. Any other failure is a real error of the
//! file and is never retried elsewhere.

use std::fs::File;
use std::io;
use std::path::Path;

pub use crate::engines::StandardCopier;
use crate::engines::{
    CopyFileRangeCopier, IoUringConfig, IoUringCopier, ReflinkCopier, SpliceCopier,
};
use crate::error::{EngineError, ErrorKind, Result};
use crate::progress::{Control, Progress};

/// Where an engine reports bytes and learns it must stop.
pub struct CopyContext<'a> {
    pub progress: &'a Progress,
    pub control: &'a Control,
    /// The source path, for error messages.
    pub source: &'a Path,
}

impl CopyContext<'_> {
    /// Counts `n` bytes moved by `engine`, applies the rate limit and the
    /// pause/cancel state. Engines call it after every chunk.
    pub fn advance(&self, engine: &'static str, n: u64) -> Result<()> {
        self.progress.add_bytes(engine, n);
        self.control.throttle(n)
    }
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
    /// The name users pass as the `engine` option and see on the job.
    fn name(&self) -> &'static str;

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

    /// Whether this engine shares the source's extents (a reflink) rather
    /// than moving bytes. Such an engine copies whole files only, holes
    /// included, so the transfer offers it the whole file before it copies
    /// data extents one by one with the other engines.
    fn shares_extents(&self) -> bool {
        false
    }

    /// Rings that copy many small files in one go, for an engine that can
    /// (io_uring); see [`crate::engines::io_uring::BatchRings`].
    fn small_file_batches(&self) -> Option<&crate::engines::io_uring::BatchRings> {
        None
    }
}

/// The engines usable here, in the order `auto` tries them.
pub struct EngineSet {
    engines: Vec<Box<dyn FileCopier>>,
}

impl Default for EngineSet {
    fn default() -> Self {
        Self::probe()
    }
}

impl EngineSet {
    /// The engines this kernel and build offer, io_uring set up as default.
    pub fn probe() -> Self {
        Self::probe_with(IoUringConfig::default())
    }

    /// The engines this kernel and build offer, in the order `auto` tries
    /// them: reflink and copy_file_range first, since they move no data
    /// through user space when they work at all; then the byte movers in
    /// the order measured fastest (see `BYTE_MOVER_ORDER`).
    pub fn probe_with(io_uring: IoUringConfig) -> Self {
        let mut engines: Vec<Box<dyn FileCopier>> = vec![Box::new(ReflinkCopier)];
        if CopyFileRangeCopier::available() {
            engines.push(Box::new(CopyFileRangeCopier));
        }
        let mut io_uring = IoUringCopier::probe(io_uring);
        for name in BYTE_MOVER_ORDER {
            match *name {
                "io_uring" => {
                    if let Some(engine) = io_uring.take() {
                        engines.push(Box::new(engine));
                    }
                }
                "splice" => engines.push(Box::new(SpliceCopier)),
                _ => engines.push(Box::new(StandardCopier)),
            }
        }
        EngineSet { engines }
    }

    /// A set of exactly these engines, in this order (tests, benchmarks).
    pub fn from_engines(engines: Vec<Box<dyn FileCopier>>) -> Self {
        assert!(!engines.is_empty(), "an engine set is never empty");
        EngineSet { engines }
    }

    /// The same set without the engine `name` (configuration can turn an
    /// engine off: `[performance] enable_io_uring = false`).
    pub fn without(mut self, name: &str) -> Self {
        self.engines.retain(|engine| engine.name() != name);
        self
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.engines.iter().map(|e| e.name()).collect()
    }

    /// The engines to try for `choice`: all of them for "auto", else the
    /// one named. An unknown or unusable name is an error.
    pub fn select(&self, choice: &str) -> Result<Vec<&dyn FileCopier>> {
        if choice == "auto" {
            return Ok(self.engines.iter().map(|e| e.as_ref()).collect());
        }
        match self.engines.iter().find(|e| e.name() == choice) {
            Some(engine) => Ok(vec![engine.as_ref()]),
            None => Err(EngineError::new(
                ErrorKind::NotSupported,
                format!(
                    "engine {choice:?} is not usable here (usable: auto, {})",
                    self.names().join(", ")
                ),
            )),
        }
    }

    /// Whether `choice` names an engine this build knows at all.
    pub fn is_known(choice: &str) -> bool {
        matches!(
            choice,
            "auto" | "standard" | "splice" | "io_uring" | "copy_file_range" | "reflink"
        )
    }
}

/// The byte-moving engines in the order `auto` tries them, fastest first, as
/// measured with `cargo run --release -p copyd-engine --example engine_bench`
/// (1 GiB file, warm cache, 2-core VM, kernel 6.18, best of 5, page cache
/// time; two rounds, other builds running, so ±20%):
///
/// | engine   | ext4 → ext4      | ext4 → tmpfs     |
/// |----------|------------------|------------------|
/// | splice   | 3766, 3589 MB/s  | 2850, 2601 MB/s  |
/// | io_uring | 2971, 2813 MB/s  | 2504, 1936 MB/s  |
/// | standard | 2695, 2849 MB/s  | 2122, 2616 MB/s  |
///
/// (copy_file_range, tried before these, did 3018, 3565 MB/s ext4 → ext4 and
/// is EXDEV across file systems.) splice wins because the source pages go to
/// the pipe by reference: one memory copy instead of read+write's two.
/// io_uring does the same two copies as read/write with buffered files; its
/// deep queue pays off with cold caches and fast devices, not here.
pub const BYTE_MOVER_ORDER: &[&str] = &["splice", "io_uring", "standard"];

/// No engine of a chain could copy: the last one's reason.
#[derive(Debug)]
pub struct Unsupported {
    pub engine: &'static str,
    pub error: io::Error,
}

impl Unsupported {
    /// The job's error for it.
    pub fn into_error(self, source: &Path) -> EngineError {
        EngineError::new(
            ErrorKind::NotSupported,
            format!(
                "engine {} cannot copy {}: {}",
                self.engine,
                source.display(),
                self.error
            ),
        )
    }
}

/// Tries the engines of `chain` in order on `offset..offset+len` until one
/// copies it, and returns that one's index in `chain`. A real failure ends
/// the attempt at once: only "not supported here", which promises nothing
/// was written, moves on to the next engine.
pub fn try_chain(
    chain: &[&dyn FileCopier],
    src: &File,
    dst: &File,
    offset: u64,
    len: u64,
    ctx: &CopyContext<'_>,
) -> Result<Result<usize, Unsupported>> {
    let mut last_unsupported = None;
    for (index, engine) in chain.iter().enumerate() {
        match engine.copy_range(src, dst, offset, len, ctx) {
            Ok(()) => return Ok(Ok(index)),
            Err(CopyError::Failed(err)) => return Err(err),
            Err(CopyError::Unsupported(error)) => {
                tracing::debug!(engine = engine.name(), %error, "engine unsupported here, trying the next");
                last_unsupported = Some(Unsupported {
                    engine: engine.name(),
                    error,
                });
            }
        }
    }
    Ok(Err(
        last_unsupported.expect("an engine chain is never empty")
    ))
}

/// Copies `offset..offset+len` with the first engine in `chain` that can.
pub fn copy_with_fallback(
    chain: &[&dyn FileCopier],
    src: &File,
    dst: &File,
    offset: u64,
    len: u64,
    ctx: &CopyContext<'_>,
) -> Result<()> {
    try_chain(chain, src, dst, offset, len, ctx)?
        .map(drop)
        .map_err(|unsupported| unsupported.into_error(ctx.source))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// An engine that answers what it is told and counts its calls.
    struct Scripted {
        name: &'static str,
        errno: Option<rustix::io::Errno>,
        calls: AtomicUsize,
    }

    impl FileCopier for Scripted {
        fn name(&self) -> &'static str {
            self.name
        }

        fn copy_range(
            &self,
            _: &File,
            _: &File,
            _: u64,
            _: u64,
            ctx: &CopyContext<'_>,
        ) -> Result<(), CopyError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match self.errno {
                None => Ok(()),
                Some(errno) => Err(crate::engines::classify(errno.into(), false, "copy", ctx)),
            }
        }
    }

    fn scripted(name: &'static str, errno: Option<rustix::io::Errno>) -> Scripted {
        Scripted {
            name,
            errno,
            calls: AtomicUsize::new(0),
        }
    }

    fn run_chain(chain: &[&dyn FileCopier]) -> Result<()> {
        let file = tempfile::tempfile().unwrap();
        let (progress, control) = (Progress::new(), Control::default());
        let ctx = CopyContext {
            progress: &progress,
            control: &control,
            source: Path::new("/src"),
        };
        copy_with_fallback(chain, &file, &file, 0, 1, &ctx)
    }

    #[test]
    fn unsupported_falls_through_but_real_errors_stop_the_chain() {
        use rustix::io::Errno;
        let (xdev, works) = (scripted("a", Some(Errno::XDEV)), scripted("b", None));
        run_chain(&[&xdev, &works]).unwrap();
        assert_eq!(works.calls.load(Ordering::Relaxed), 1);

        for errno in [Errno::IO, Errno::NOSPC, Errno::ACCESS] {
            let (failing, next) = (scripted("a", Some(errno)), scripted("b", None));
            let err = run_chain(&[&failing, &next]).unwrap_err();
            assert_eq!(
                next.calls.load(Ordering::Relaxed),
                0,
                "{errno:?} must not be retried"
            );
            assert_eq!(err.os_error, Some(errno.raw_os_error()));
        }
        let err = run_chain(&[&scripted("a", Some(Errno::NOSPC))]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NoSpace);

        let only = scripted("only", Some(Errno::OPNOTSUPP));
        assert_eq!(
            run_chain(&[&only]).unwrap_err().kind,
            ErrorKind::NotSupported
        );
    }
}
