//! Small file-system operations the transfer is built from: temporary names,
//! atomic renames, syncing directories, carrying metadata over.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Gid, RenameFlags, Timespec, Timestamps, Uid, CWD};
use rustix::io::Errno;

use crate::error::{EngineError, Result};
use crate::request::Preserve;
use crate::xattr;

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

/// The permission bits a copy gets: setuid and setgid are dropped, as `cp`
/// does when it does not also keep the owner, so a copy never creates
/// privilege.
pub fn copy_mode(source: &Metadata) -> u32 {
    source.mode() & 0o1777
}

/// The permission bits a copy gets when `owner_kept` says whether it now
/// has the source's owner and group. setuid/setgid survive only then, and
/// only for root: a root copy that could not chown, or anyone else's copy,
/// must not hand out a privilege under a different owner.
pub fn copy_mode_owned(source: &Metadata, owner_kept: bool) -> u32 {
    if owner_kept && rustix::process::geteuid().is_root() {
        source.mode() & 0o7777
    } else {
        copy_mode(source)
    }
}

/// The process's umask, which the kernel applies to every file it creates
/// (read once, from /proc; the daemon never changes it). Unknown, it is
/// taken as 0o777: then no created mode is trusted to be exact.
pub fn process_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
            })
            .unwrap_or(0o777)
    })
}

/// Whether files created in the open directory `dir` get their mode from a
/// default ACL (instead of the umask). Unsure, it says yes.
pub fn has_default_acl(dir: BorrowedFd<'_>) -> bool {
    !matches!(
        rustix::fs::fgetxattr(dir, "system.posix_acl_default", &mut [0u8; 0][..]),
        Err(Errno::NODATA | Errno::OPNOTSUPP)
    )
}

/// Gives `chown` the source's owner and group. Like `cp -p` as a normal
/// user, EPERM is no error: the group alone is tried (the caller may belong
/// to it) and the copy keeps the caller's owner. Returns whether both the
/// owner and the group were kept.
fn give_owner(
    path: &Path,
    source: &Metadata,
    chown: impl Fn(Option<Uid>, Option<Gid>) -> rustix::io::Result<()>,
) -> Result<bool> {
    let (uid, gid) = (Uid::from_raw(source.uid()), Gid::from_raw(source.gid()));
    match chown(Some(uid), Some(gid)) {
        Ok(()) => Ok(true),
        Err(Errno::PERM) => {
            let _ = chown(None, Some(gid));
            Ok(false)
        }
        Err(errno) => Err(EngineError::io("set the owner of", path, &errno.into())),
    }
}

fn timestamps_of(source: &Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: source.atime(),
            tv_nsec: source.atime_nsec() as _,
        },
        last_modification: Timespec {
            tv_sec: source.mtime(),
            tv_nsec: source.mtime_nsec() as _,
        },
    }
}

/// Carries mode and times of `source` over to the open file `copy`.
pub fn apply_file_metadata(
    copy: &File,
    path: &Path,
    source: &Metadata,
    preserve: &Preserve,
) -> Result<()> {
    carry_file_metadata(None, copy, path, source, preserve)
}

/// Carries what `preserve` asks from the source (`src`, when open, and its
/// metadata `source`) to the open file `copy`, in the order that keeps each
/// step from undoing another: owner first (chown clears setuid/setgid and
/// file capabilities), then extended attributes and ACLs, then the mode,
/// then the times (every other change moves ctime, and xattr changes can
/// touch times on some file systems).
pub fn carry_file_metadata(
    src: Option<&File>,
    copy: &File,
    path: &Path,
    source: &Metadata,
    preserve: &Preserve,
) -> Result<()> {
    let owner_kept = if preserve.ownership {
        give_owner(path, source, |uid, gid| rustix::fs::fchown(copy, uid, gid))?
    } else {
        false
    };
    if let (true, Some(src)) = (preserve.xattr, src) {
        xattr::copy_fd(src, copy, path)?;
    }
    if preserve.mode {
        copy.set_permissions(fs::Permissions::from_mode(copy_mode_owned(
            source, owner_kept,
        )))
        .map_err(|err| EngineError::io("set the mode of", path, &err))?;
    }
    if preserve.timestamps {
        rustix::fs::futimens(copy, &timestamps_of(source))
            .map_err(|errno| EngineError::io("set the times of", path, &errno.into()))?;
    }
    Ok(())
}

/// Carries mode and times over to a directory or symlink by path (a symlink
/// has no mode of its own and is not followed).
pub fn apply_path_metadata(path: &Path, source: &Metadata, preserve: &Preserve) -> Result<()> {
    carry_path_metadata(None, path, source, preserve)
}

/// [`carry_file_metadata`] for a directory or symlink, by path and never
/// following a symlink; `source_path` is where extended attributes come
/// from.
pub fn carry_path_metadata(
    source_path: Option<&Path>,
    path: &Path,
    source: &Metadata,
    preserve: &Preserve,
) -> Result<()> {
    carry_metadata_at(CWD, path, path, source_path, source, preserve)
}

/// [`carry_path_metadata`] for the entry `name` of the open directory `dir`
/// (one lookup of one name, not of a whole path); `path` is the entry's
/// path, for extended attributes and messages.
pub fn carry_metadata_at(
    dir: BorrowedFd<'_>,
    name: &Path,
    path: &Path,
    source_path: Option<&Path>,
    source: &Metadata,
    preserve: &Preserve,
) -> Result<()> {
    let is_symlink = source.file_type().is_symlink();
    let owner_kept = if preserve.ownership {
        give_owner(path, source, |uid, gid| {
            rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
        })?
    } else {
        false
    };
    if let (true, Some(source_path)) = (preserve.xattr, source_path) {
        xattr::copy_path(source_path, path)?;
    }
    if preserve.mode && !is_symlink {
        let mode = rustix::fs::Mode::from_raw_mode(copy_mode_owned(source, owner_kept));
        rustix::fs::chmodat(dir, name, mode, AtFlags::empty())
            .map_err(|errno| EngineError::io("set the mode of", path, &errno.into()))?;
    }
    if preserve.timestamps {
        rustix::fs::utimensat(dir, name, &timestamps_of(source), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|errno| EngineError::io("set the times of", path, &errno.into()))?;
    }
    Ok(())
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
