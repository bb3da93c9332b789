//! copy_file_range(2): the kernel copies within one file system without the
//! data passing through user space; NFS and SMB copy server-side, and btrfs
//! and XFS make reflinks of the range. Across different file systems the
//! kernel (since 5.19) answers EXDEV, and the chain falls through.

use std::fs::File;
use std::io;

use rustix::io::Errno;

use super::{classify, shrank, MAX_CHUNK};
use super::{CopyContext, CopyError, EngineId, FileCopier};

pub struct CopyFileRangeCopier;

impl CopyFileRangeCopier {
    /// Whether the kernel has the system call at all: asked with two pipe
    /// ends, which it refuses with EINVAL if it knows the call, ENOSYS if not.
    pub fn available() -> bool {
        let Ok((read, write)) = rustix::pipe::pipe() else {
            return false;
        };
        !matches!(
            rustix::fs::copy_file_range(&read, None, &write, None, 1),
            Err(Errno::NOSYS)
        )
    }
}

impl FileCopier for CopyFileRangeCopier {
    fn id(&self) -> EngineId {
        EngineId::CopyFileRange
    }

    fn copy_range(
        &self,
        src: &File,
        dst: &File,
        offset: u64,
        len: u64,
        ctx: &CopyContext<'_>,
    ) -> Result<(), CopyError> {
        let end = offset + len;
        let mut position = offset;
        while position < end {
            let want = (end - position).min(MAX_CHUNK) as usize;
            let (mut off_in, mut off_out) = (position, position);
            let copied = ctx.retrying("copy", Some(src), || {
                rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want)
                    .map_err(io::Error::from)
            })?;
            match copied {
                Ok(0) => return Err(shrank(ctx)),
                Ok(n) => {
                    position += n as u64;
                    ctx.advance(self.name(), n as u64)?;
                }
                Err(err) => return Err(classify(err, position > offset, "copy", ctx)),
            }
        }
        Ok(())
    }
}
