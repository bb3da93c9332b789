//! Directories reached through their descriptors: opened once, and from
//! then on named as `/proc/self/fd/N/…`, so a symlink swapped into a path
//! meanwhile changes nothing. The transfer, the merge and cleanup use them.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::error::{EngineError, Result};

/// A directory opened once and then reached through its descriptor: paths
/// below `/proc/self/fd/N` name entries of exactly that directory, whatever
/// happens to the path it was opened by. (The thread group may always look
/// at its own descriptors, whatever credentials a worker thread acts with.)
/// Without /proc, the plain path is used.
pub(crate) struct AnchoredDir {
    pub(crate) dir: File,
    /// The path it was opened by, for messages and for telling two apart.
    pub(crate) path: std::path::PathBuf,
    via: std::path::PathBuf,
}

impl AnchoredDir {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::DIRECTORY.bits() as i32)
            .open(path)
            .map_err(|err| EngineError::io("open directory", path, &err))?;
        Self::anchored(dir, path)
    }

    /// `dir`, opened at `path`, reached from now on through its descriptor.
    fn anchored(dir: File, path: &Path) -> Result<Self> {
        let magic =
            Path::new("/proc/self/fd").join(std::os::fd::AsRawFd::as_raw_fd(&dir).to_string());
        let via = if fs::metadata(&magic).is_ok_and(|m| m.is_dir()) {
            magic
        } else {
            path.to_path_buf()
        };
        Ok(AnchoredDir {
            dir,
            path: path.to_path_buf(),
            via,
        })
    }

    /// Opens `path` as [`Self::open`] does, refusing a symlink at its last
    /// name (O_NOFOLLOW): a merge goes down the destination this way.
    pub(crate) fn open_nofollow(path: &Path) -> Result<Self> {
        let flags = rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::NOFOLLOW;
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits() as i32)
            .open(path)
            .map_err(|err| EngineError::io("open directory", path, &err))?;
        Self::anchored(dir, path)
    }

    pub(crate) fn join(&self, name: &std::ffi::OsStr) -> std::path::PathBuf {
        self.via.join(name)
    }

    /// Makes the directory's entries durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.dir
            .sync_all()
            .map_err(|err| EngineError::io("sync directory", &self.path, &err))
    }

    /// Flushes everything written on the directory's file system.
    pub(crate) fn sync_file_system(&self) -> Result<()> {
        rustix::fs::syncfs(&self.dir)
            .map_err(|errno| EngineError::io("sync the file system of", &self.path, &errno.into()))
    }

    pub(crate) fn device(&self) -> Result<u64> {
        let metadata = self
            .dir
            .metadata()
            .map_err(|err| EngineError::io("stat directory", &self.path, &err))?;
        Ok(metadata.dev())
    }

    /// Speaks of the directory by the path people gave, not by descriptor.
    pub(crate) fn explain(&self, mut err: EngineError) -> EngineError {
        if self.via != self.path {
            let via = self.via.display().to_string();
            err.message = err.message.replace(&via, &self.path.display().to_string());
        }
        err
    }
}
