//! Plain pread/pwrite through a buffer: works on every file system, and is
//! the last engine of every `auto` chain.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::shrank;
use super::{CopyContext, CopyError, EngineId, FileCopier};
use crate::error::EngineError;

pub struct StandardCopier;

/// Large enough to amortise the syscalls, small enough to stay in cache.
const CHUNK: usize = 1 << 20;

impl FileCopier for StandardCopier {
    fn id(&self) -> EngineId {
        EngineId::Standard
    }

    fn copy_range(
        &self,
        src: &File,
        dst: &File,
        offset: u64,
        len: u64,
        ctx: &CopyContext<'_>,
    ) -> Result<(), CopyError> {
        // One buffer per thread, kept: a fresh one per range cost a zeroed
        // allocation per file, which was a third of the user-space
        // instructions of a tree of small files. It grows to the largest
        // range asked for, at most CHUNK.
        BUFFER.with_borrow_mut(|buffer| {
            let size = len.clamp(1, CHUNK as u64) as usize;
            if buffer.len() < size {
                buffer.resize(size, 0);
            }
            self.copy_through(buffer, src, dst, offset, len, ctx)
        })
    }
}

/// Copies `src` from `offset` to its end of file, by read and write, however
/// many bytes that is; returns how many it copied. This is how files whose
/// size says nothing are copied (procfs and sysfs say 0 or a page, some
/// FUSE file systems say anything): their end is where a read returns 0,
/// as cp copies them. Called at a file's size, it finds out whether the
/// size was the end, at the cost of one read.
pub fn copy_to_end(
    src: &File,
    dst: &File,
    offset: u64,
    ctx: &CopyContext<'_>,
) -> crate::error::Result<u64> {
    // A short first buffer: mostly nothing or little is left to read.
    const FIRST: usize = 64 << 10;
    BUFFER.with_borrow_mut(|buffer| {
        if buffer.len() < FIRST {
            buffer.resize(FIRST, 0);
        }
        let mut position = offset;
        loop {
            let read = match ctx.retrying("read", Some(src), || src.read_at(buffer, position))? {
                Ok(0) => return Ok(position - offset),
                Ok(n) => n,
                Err(err) => return Err(EngineError::io("read", ctx.source, &err)),
            };
            ctx.observe(position, &buffer[..read]);
            write_all_at(dst, &buffer[..read], position, ctx)?;
            position += read as u64;
            ctx.advance(StandardCopier.name(), read as u64)?;
            if read == buffer.len() && buffer.len() < CHUNK {
                buffer.resize(CHUNK, 0);
            }
        }
    })
}

/// Writes all of `bytes` at `offset`, retrying transient errors.
pub(crate) fn write_all_at(
    dst: &File,
    mut bytes: &[u8],
    mut offset: u64,
    ctx: &CopyContext<'_>,
) -> crate::error::Result<()> {
    while !bytes.is_empty() {
        match ctx.retrying("write", Some(dst), || dst.write_at(bytes, offset))? {
            Ok(0) => {
                let err = io::Error::from(io::ErrorKind::WriteZero);
                return Err(EngineError::io("write the copy of", ctx.source, &err));
            }
            Ok(n) => {
                bytes = &bytes[n..];
                offset += n as u64;
            }
            Err(err) => return Err(EngineError::io("write the copy of", ctx.source, &err)),
        }
    }
    Ok(())
}

thread_local! {
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl StandardCopier {
    fn copy_through(
        &self,
        buffer: &mut [u8],
        src: &File,
        dst: &File,
        offset: u64,
        len: u64,
        ctx: &CopyContext<'_>,
    ) -> Result<(), CopyError> {
        let end = offset + len;
        let mut position = offset;
        while position < end {
            let want = ((end - position) as usize).min(buffer.len());
            let read = ctx.retrying("read", Some(src), || {
                src.read_at(&mut buffer[..want], position)
            })?;
            let read = match read {
                Ok(0) => return Err(shrank(ctx)),
                Ok(n) => n,
                Err(err) => return Err(EngineError::io("read", ctx.source, &err).into()),
            };
            ctx.observe(position, &buffer[..read]);
            write_all_at(dst, &buffer[..read], position, ctx)?;
            position += read as u64;
            ctx.advance(self.name(), read as u64)?;
        }
        Ok(())
    }
}
