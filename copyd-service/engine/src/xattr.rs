//! Copying extended attributes, POSIX ACLs included (they are the
//! `system.posix_acl_access` and `system.posix_acl_default` attributes).
//!
//! Like `cp -a`, a target that cannot hold an attribute (ENOTSUP: tmpfs
//! without user xattrs, vfat; EPERM: `user.*` on a symlink, `trusted.*`
//! without root; E2BIG/ERANGE/ENOSPC-free size limits) is no reason to fail
//! the copy: those attributes are skipped with a debug log. Reading the
//! source failing, or an I/O error, is a real error.

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::XattrFlags;
use rustix::io::Errno;

use crate::error::{EngineError, Result};

/// Copies every extended attribute of the open file `src` to `dst`.
pub fn copy_fd(src: &File, dst: &File, path: &Path) -> Result<()> {
    copy_with(
        path,
        |buf| rustix::fs::flistxattr(src, buf),
        |name, buf| rustix::fs::fgetxattr(src, name, buf),
        |name, value| rustix::fs::fsetxattr(dst, name, value, XattrFlags::empty()),
    )
}

/// Copies every extended attribute of `src` to `dst` without following
/// either if it is a symlink.
pub fn copy_path(src: &Path, dst: &Path) -> Result<()> {
    copy_with(
        dst,
        |buf| rustix::fs::llistxattr(src, buf),
        |name, buf| rustix::fs::lgetxattr(src, name, buf),
        |name, value| rustix::fs::lsetxattr(dst, name, value, XattrFlags::empty()),
    )
}

fn copy_with(
    path: &Path,
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&std::ffi::CStr, &mut [u8]) -> rustix::io::Result<usize>,
    set: impl Fn(&std::ffi::CStr, &[u8]) -> rustix::io::Result<()>,
) -> Result<()> {
    let fail = |what: &str, errno: Errno| EngineError::io(what, path, &io::Error::from(errno));
    let names = match read_grown(&list) {
        Ok(names) => names,
        // The source's file system has no xattrs at all: nothing to copy.
        Err(Errno::OPNOTSUPP) => return Ok(()),
        Err(errno) => return Err(fail("list the extended attributes of", errno)),
    };
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::CString::new(name).expect("split at NUL");
        let value = match read_grown(|buf| get(&name, buf)) {
            Ok(value) => value,
            // Removed since it was listed.
            Err(Errno::NODATA) => continue,
            Err(errno) => return Err(fail("read the extended attributes of", errno)),
        };
        match set(&name, &value) {
            Ok(()) => {}
            Err(
                errno @ (Errno::OPNOTSUPP
                | Errno::PERM
                | Errno::ACCESS
                | Errno::TOOBIG
                | Errno::RANGE),
            ) => {
                tracing::debug!(path = %path.display(), name = ?name, %errno, "extended attribute not kept");
            }
            Err(errno) => return Err(fail("set the extended attributes of", errno)),
        }
    }
    Ok(())
}

/// Calls `read` with a buffer that grows until the answer fits: a list or
/// value may grow between asking its size and reading it (ERANGE).
fn read_grown(
    read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if buf.len() < 1 << 24 => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(errno) => return Err(errno),
        }
    }
}
