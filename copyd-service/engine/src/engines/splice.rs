//! splice(2) through a pipe: file → pipe → file. The pages move between the
//! page caches without a copy into user space, and unlike copy_file_range it
//! works between any two file systems.

use std::fs::File;
use std::io;

use rustix::pipe::{PipeFlags, SpliceFlags};

use super::{classify, shrank};
use super::{CopyContext, CopyError, EngineId, FileCopier};
use crate::error::EngineError;

pub struct SpliceCopier;

/// The pipe size asked for: the default /proc/sys/fs/pipe-max-size, which an
/// unprivileged process may use. Fewer round trips than the 64 KiB default.
const PIPE_SIZE: usize = 1 << 20;

impl FileCopier for SpliceCopier {
    fn id(&self) -> EngineId {
        EngineId::Splice
    }

    fn copy_range(
        &self,
        src: &File,
        dst: &File,
        offset: u64,
        len: u64,
        ctx: &CopyContext<'_>,
    ) -> Result<(), CopyError> {
        // A pipe per range, never shared: after an error it may hold data.
        let (pipe_out, pipe_in) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)
            .map_err(|errno| EngineError::io("make a pipe to copy", ctx.source, &errno.into()))?;
        let pipe_size = rustix::pipe::fcntl_setpipe_size(&pipe_in, PIPE_SIZE)
            .or_else(|_| rustix::pipe::fcntl_getpipe_size(&pipe_in))
            .unwrap_or(1 << 16);

        let end = offset + len;
        let mut position = offset;
        while position < end {
            let want = ((end - position) as usize).min(pipe_size);
            let mut off_in = position;
            let filled = ctx.retrying("read", Some(src), || {
                rustix::pipe::splice(
                    src,
                    Some(&mut off_in),
                    &pipe_in,
                    None,
                    want,
                    SpliceFlags::MORE,
                )
                .map_err(io::Error::from)
            })?;
            let filled = match filled {
                Ok(0) => return Err(shrank(ctx)),
                Ok(n) => n,
                Err(err) => return Err(classify(err, position > offset, "read", ctx)),
            };
            // Drain the pipe into the copy; the write side may take less.
            let mut off_out = position;
            let mut left = filled;
            while left > 0 {
                let drained = ctx.retrying("write", Some(dst), || {
                    rustix::pipe::splice(
                        &pipe_out,
                        None,
                        dst,
                        Some(&mut off_out),
                        left,
                        SpliceFlags::MOVE,
                    )
                    .map_err(io::Error::from)
                })?;
                match drained {
                    Ok(0) => {
                        return Err(classify(
                            io::ErrorKind::WriteZero.into(),
                            true,
                            "write the copy of",
                            ctx,
                        ))
                    }
                    Ok(n) => left -= n,
                    Err(err) => {
                        let wrote_any = position > offset || off_out > position;
                        return Err(classify(err, wrote_any, "write the copy of", ctx));
                    }
                }
            }
            position += filled as u64;
            ctx.advance(self.name(), filled as u64)?;
        }
        Ok(())
    }
}
