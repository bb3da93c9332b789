//! Plain pread/pwrite through a buffer: works on every file system, and is
//! the last engine of every `auto` chain.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::shrank;
use crate::copier::{CopyContext, CopyError, FileCopier};
use crate::error::EngineError;

pub struct StandardCopier;

/// Large enough to amortise the syscalls, small enough to stay in cache.
const CHUNK: usize = 1 << 20;

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
        // Sized to the range, so a small file does not pay for a 1 MiB buffer.
        let mut buffer = vec![0u8; len.clamp(1, CHUNK as u64) as usize];
        let end = offset + len;
        let mut position = offset;
        while position < end {
            let want = ((end - position) as usize).min(buffer.len());
            let read = match src.read_at(&mut buffer[..want], position) {
                Ok(0) => return Err(shrank(ctx)),
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
