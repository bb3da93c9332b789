//! A copy that replaces a file takes that file's mode and owner, when the
//! job asks (the `keep_replaced_attributes` option: what `cp` without `-p`
//! does, writing into the existing file it opens with O_TRUNC, where copyd
//! renames a new file over it). Done on the copy under its temporary name,
//! just before its rename, so the file under the final name never has the
//! source's mode, not even for a moment.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::Transfer;
use crate::error::{EngineError, Result};

impl Transfer<'_> {
    /// Gives the copy at `temp` the permission bits and, where the job's
    /// rights allow, the owner and group of the regular file at `target`
    /// it is about to replace. Nothing is done without the option, nor when
    /// either is not a regular file (a file over a symlink or a special
    /// file gets the copy's own), nor when `target` is gone meanwhile.
    pub(super) fn take_replaced_attributes(&self, temp: &Path, target: &Path) -> Result<()> {
        if !self.keep_replaced_attributes {
            return Ok(());
        }
        let (Ok(old), Ok(new)) = (fs::symlink_metadata(target), fs::symlink_metadata(temp)) else {
            return Ok(());
        };
        if !old.is_file() || !new.is_file() {
            return Ok(());
        }
        // The owner first: chown clears the set-id bits. Taken only where
        // allowed (root, or a group the caller is in); the copy keeps its
        // own otherwise, as cp's O_TRUNC write could not change it either.
        if (old.uid(), old.gid()) != (new.uid(), new.gid()) {
            let both = std::os::unix::fs::lchown(temp, Some(old.uid()), Some(old.gid()));
            if both.is_err() {
                let _ = std::os::unix::fs::lchown(temp, None, Some(old.gid()));
            }
        }
        // Permission bits and the sticky bit; never set-uid or set-gid,
        // which a write into the old file would have cleared too.
        let mode = old.mode() & 0o1777;
        fs::set_permissions(temp, fs::Permissions::from_mode(mode))
            .map_err(|err| EngineError::io("set the mode of", temp, &err))
    }
}
