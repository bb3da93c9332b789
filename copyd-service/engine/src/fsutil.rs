//! Small file-system operations the transfer is built from: temporary names,
//! atomic renames, syncing directories. (Metadata: `metadata`.)

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{RenameFlags, CWD};

use crate::error::{EngineError, Result};

/// The hidden name an item is built under before it gets its final name:
/// `.copyd-<tag>-<index>.tmp` beside the target. Deterministic, so a resumed
/// job finds its own work and nobody else's.
pub fn temp_path(target: &Path, tag: &str, index: usize) -> PathBuf {
    let parent = target.parent().unwrap_or(Path::new("/"));
    parent.join(format!(".copyd-{tag}-{index}.tmp"))
}

/// `base` joined with `name`, as `Path::join`, in one allocation of the
/// right size: `join` copies `base`, then grows the copy for `name` (a
/// reallocation and a second copy). The walk and the workers join a path
/// or two for every file of a tree.
pub fn joined(base: &Path, name: impl AsRef<Path>) -> PathBuf {
    let name = name.as_ref();
    let mut path = PathBuf::with_capacity(base.as_os_str().len() + 1 + name.as_os_str().len());
    path.push(base);
    path.push(name);
    path
}

/// `root` joined with a walked entry's relative path; the root entry's is
/// empty, and `Path::join("")` would add a trailing slash, which makes
/// opening a file fail with ENOTDIR.
pub(crate) fn under(root: &Path, relative: &Path) -> std::path::PathBuf {
    if relative.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        joined(root, relative)
    }
}

/// Whether a file name is one of copyd's temporary names.
pub fn is_temp_name(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(b".copyd-") && name.ends_with(b".tmp")
}

/// Gives `temp` the name `target`. Without `replace` an existing target is an
/// error (RENAME_NOREPLACE: no check-then-rename race). With `replace`, a
/// directory target is swapped out atomically (RENAME_EXCHANGE) and the old
/// one deleted, so the target path never stands empty.
pub fn rename_into_place(temp: &Path, target: &Path, replace: bool) -> Result<()> {
    let fail =
        |errno: rustix::io::Errno| EngineError::io("rename into place", target, &errno.into());
    if !replace {
        return rustix::fs::renameat_with(CWD, temp, CWD, target, RenameFlags::NOREPLACE)
            .map_err(fail);
    }
    let target_is_dir = fs::symlink_metadata(target).is_ok_and(|m| m.is_dir());
    if !target_is_dir {
        return rustix::fs::renameat_with(CWD, temp, CWD, target, RenameFlags::empty())
            .map_err(fail);
    }
    rustix::fs::renameat_with(CWD, temp, CWD, target, RenameFlags::EXCHANGE).map_err(fail)?;
    // `temp` now names the replaced tree.
    remove_all(temp)
}

/// Opens a directory to sync it: O_DIRECTORY, so that whatever else stands
/// at `dir` by now (a FIFO, whose plain open would wait for a writer) is an
/// error at once.
fn open_dir_to_sync(dir: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECTORY.bits() as i32)
        .open(dir)
}

/// Makes a directory's entries (creations, renames) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let handle =
        open_dir_to_sync(dir).map_err(|err| EngineError::io("open directory", dir, &err))?;
    handle
        .sync_all()
        .map_err(|err| EngineError::io("sync directory", dir, &err))
}

/// Whether `file` is on a local file system whose copy_file_range moves
/// bytes through the page cache like any copy (ext4, tmpfs, xfs, btrfs,
/// f2fs), as opposed to one that copies on a server (NFS, SMB) or one not
/// known.
pub fn is_local_page_cache_fs(file: &File) -> bool {
    const LOCAL: [u64; 5] = [
        0xEF53,      // ext2, ext3, ext4
        0x0102_1994, // tmpfs
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0xF2F5_2010, // f2fs
    ];
    rustix::fs::fstatfs(file).is_ok_and(|stat| LOCAL.contains(&(stat.f_type as u64)))
}

/// Flushes everything written on the file system holding the directory
/// `path`: one call instead of one fsync per file when a tree of many
/// small files was built.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    let handle = open_dir_to_sync(path).map_err(|err| EngineError::io("open", path, &err))?;
    rustix::fs::syncfs(&handle).map_err(|errno| EngineError::io("sync", path, &errno.into()))
}

/// Removes a file, symlink or whole tree; a missing one is fine.
pub fn remove_all(path: &Path) -> Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(EngineError::io("remove", path, &err)),
    }
}

/// Opens the source file `path` read-only, as [`open_source_at`] does.
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    open_source_at(rustix::fs::CWD, path)
}

/// Opens the source file `name` in `dir` read-only, without following a
/// final symlink and without waiting. A file swapped for a FIFO since the
/// walk would block a plain open until a writer came, holding the job, its
/// disk's place in the queue and any cancel for as long as its owner
/// liked. Anything but a regular file is refused (as a vanished file: the
/// rest of a tree goes on); the file is then put back in blocking mode, so
/// that no engine's reads of it depend on how each treats O_NONBLOCK on a
/// regular file. (A batch of small files through io_uring opens its
/// sources in the ring and hands any it could not copy to this path;
/// `tests/special_files.rs` swaps a FIFO into both.)
pub fn open_source_at(dir: std::os::fd::BorrowedFd<'_>, name: &Path) -> io::Result<File> {
    use rustix::fs::OFlags;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(dir, name, flags, rustix::fs::Mode::empty())?;
    let kind = rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
    if kind != rustix::fs::FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no longer a regular file (replaced since it was looked at)",
        ));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noreplace_rename_refuses_an_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let (temp, target) = (dir.path().join("t"), dir.path().join("f"));
        fs::write(&temp, b"new").unwrap();
        fs::write(&target, b"old").unwrap();
        let err = rename_into_place(&temp, &target, false).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).unwrap(), b"old");
        rename_into_place(&temp, &target, true).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn replacing_a_directory_swaps_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (temp, target) = (dir.path().join("t"), dir.path().join("d"));
        fs::create_dir_all(temp.join("new")).unwrap();
        fs::create_dir_all(target.join("old")).unwrap();
        rename_into_place(&temp, &target, true).unwrap();
        assert!(target.join("new").exists() && !target.join("old").exists());
        assert!(!temp.exists());
    }

    #[test]
    fn temp_names_are_recognised() {
        let temp = temp_path(Path::new("/x/y"), "7", 0);
        assert_eq!(temp, Path::new("/x/.copyd-7-0.tmp"));
        assert!(is_temp_name(temp.file_name().unwrap()));
        assert!(!is_temp_name(std::ffi::OsStr::new("y")));
    }
}
