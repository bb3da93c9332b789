//! Reflinks: the copy shares the source's extents (FICLONE), so it costs no
//! data I/O and no space until either side is written. Only btrfs, XFS (with
//! reflink=1), bcachefs, OCFS2 and a few others can, and only within one
//! file system.
//!
//! Only whole files: FICLONERANGE would need an unsafe ioctl wrapper, and the
//! engine keeps `unsafe` to the io_uring module. A whole-file clone also
//! carries holes over, so the transfer tries this engine on the whole file
//! before it copies data extents one by one (see `shares_extents`).

use std::fs::File;
use std::io;

use rustix::io::Errno;

use super::{is_unsupported, CopyContext, CopyError, EngineId, FileCopier};
use crate::error::EngineError;

pub struct ReflinkCopier;

impl FileCopier for ReflinkCopier {
    fn id(&self) -> EngineId {
        EngineId::Reflink
    }

    fn copy_range(
        &self,
        src: &File,
        dst: &File,
        offset: u64,
        len: u64,
        ctx: &CopyContext<'_>,
    ) -> Result<(), CopyError> {
        let src_len = src
            .metadata()
            .map_err(|err| EngineError::io("inspect", ctx.source, &err))?
            .len();
        if offset != 0 || len != src_len {
            return Err(CopyError::Unsupported(io::Error::from(Errno::INVAL)));
        }
        match rustix::fs::ioctl_ficlone(dst, src) {
            Ok(()) => Ok(ctx.advance(self.name(), len)?),
            Err(errno) => {
                let err = io::Error::from(errno);
                // EXDEV, EOPNOTSUPP, EINVAL, ENOTTY: not here. A clone is
                // all or nothing, so nothing was written either way.
                if is_unsupported(&err) {
                    Err(CopyError::Unsupported(err))
                } else {
                    Err(EngineError::io("clone", ctx.source, &err).into())
                }
            }
        }
    }
}
