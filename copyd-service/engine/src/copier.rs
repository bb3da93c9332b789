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
use std::os::unix::fs::FileExt;
use std::path::Path;

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
        Some(Errno::XDEV | Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS | Errno::NOTTY | Errno::BADF)
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
}

/// Plain pread/pwrite through a buffer: works everywhere.
pub struct StandardCopier;

/// Large enough to amortise the syscalls, small enough to stay in cache.
const STANDARD_CHUNK: usize = 1 << 20;

impl FileCopier for StandardCopier {
    fn name(&self) -> &'static str {
        "standard"
    }

    fn copy_range(
        &self,
        src: &File,
        dst: &File,
        offset: u64,
        len: u64,
        ctx: &CopyContext<'_>,
    ) -> Result<(), CopyError> {
        let mut buffer = vec![0u8; (len as usize).clamp(1, STANDARD_CHUNK)];
        let end = offset + len;
        let mut position = offset;
        while position < end {
            let want = ((end - position) as usize).min(buffer.len());
            let read = match src.read_at(&mut buffer[..want], position) {
                Ok(0) => {
                    return Err(CopyError::Failed(EngineError::new(
                        ErrorKind::Failed,
                        format!("{} shrank while being copied", ctx.source.display()),
                    )))
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(EngineError::io("read", ctx.source, &err).into()),
            };
            dst.write_all_at(&buffer[..read], position)
                .map_err(|err| EngineError::io("write the copy of", ctx.source, &err))?;
            position += read as u64;
            ctx.advance(self.name(), read as u64)?;
        }
        Ok(())
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
    /// The engines this kernel and build offer.
    pub fn probe() -> Self {
        EngineSet {
            engines: vec![Box::new(StandardCopier)],
        }
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

/// Copies `offset..offset+len` with the first engine in `chain` that can.
pub fn copy_with_fallback(
    chain: &[&dyn FileCopier],
    src: &File,
    dst: &File,
    offset: u64,
    len: u64,
    ctx: &CopyContext<'_>,
) -> Result<()> {
    let mut last_unsupported = None;
    for engine in chain {
        match engine.copy_range(src, dst, offset, len, ctx) {
            Ok(()) => return Ok(()),
            Err(CopyError::Failed(err)) => return Err(err),
            Err(CopyError::Unsupported(err)) => {
                tracing::debug!(engine = engine.name(), %err, "engine unsupported here, trying the next");
                last_unsupported = Some((engine.name(), err));
            }
        }
    }
    let (name, err) = last_unsupported.expect("an engine chain is never empty");
    Err(EngineError::new(
        ErrorKind::NotSupported,
        format!("engine {name} cannot copy {}: {err}", ctx.source.display()),
    ))
}
