//! Trying the engines of a chain in turn: "not supported here" falls
//! through to the next, anything else is the file's error.

use std::fs::File;
use std::io;
use std::path::Path;

use super::{CopyContext, CopyError, FileCopier};
use crate::error::{EngineError, ErrorKind, Result};

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
            Ok(()) => {
                ctx.progress.add_engine_operation(engine.name());
                return Ok(Ok(index));
            }
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
    use crate::engines::EngineId;
    use crate::progress::{Control, Progress};

    /// An engine that answers what it is told and counts its calls.
    struct Scripted {
        id: EngineId,
        errno: Option<rustix::io::Errno>,
        calls: AtomicUsize,
    }

    impl FileCopier for Scripted {
        fn id(&self) -> EngineId {
            self.id
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
                Some(errno) => Err(super::super::classify(errno.into(), false, "copy", ctx)),
            }
        }
    }

    fn scripted(id: EngineId, errno: Option<rustix::io::Errno>) -> Scripted {
        Scripted {
            id,
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
            observer: None,
        };
        copy_with_fallback(chain, &file, &file, 0, 1, &ctx)
    }

    #[test]
    fn unsupported_falls_through_but_real_errors_stop_the_chain() {
        use rustix::io::Errno;
        let (xdev, works) = (
            scripted(EngineId::Splice, Some(Errno::XDEV)),
            scripted(EngineId::Standard, None),
        );
        run_chain(&[&xdev, &works]).unwrap();
        assert_eq!(works.calls.load(Ordering::Relaxed), 1);

        for errno in [Errno::IO, Errno::NOSPC, Errno::ACCESS] {
            let (failing, next) = (
                scripted(EngineId::Splice, Some(errno)),
                scripted(EngineId::Standard, None),
            );
            let err = run_chain(&[&failing, &next]).unwrap_err();
            assert_eq!(
                next.calls.load(Ordering::Relaxed),
                0,
                "{errno:?} must not be retried"
            );
            assert_eq!(err.os_error, Some(errno.raw_os_error()));
        }
        let err = run_chain(&[&scripted(EngineId::Splice, Some(Errno::NOSPC))]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NoSpace);

        let only = scripted(EngineId::Standard, Some(Errno::OPNOTSUPP));
        assert_eq!(
            run_chain(&[&only]).unwrap_err().kind,
            ErrorKind::NotSupported
        );
    }
}
