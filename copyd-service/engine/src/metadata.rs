//! Carrying a source's metadata over to its copy: which metadata
//! ([`Preserve`]), the mode a copy gets, owner, times, extended attributes
//! and ACLs, by path or through an open directory.

use std::fs::{self, File, Metadata};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, Gid, Timespec, Timestamps, Uid, CWD};
use rustix::io::Errno;

use crate::error::{EngineError, Result};
use crate::xattr;

/// Which metadata a copy carries over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preserve {
    pub mode: bool,
    pub timestamps: bool,
    pub ownership: bool,
    pub xattr: bool,
    pub links: bool,
}

impl Default for Preserve {
    /// Like `cp` with `--preserve=mode,timestamps`.
    fn default() -> Self {
        Preserve {
            mode: true,
            timestamps: true,
            ownership: false,
            xattr: false,
            links: false,
        }
    }
}

impl Preserve {
    /// Everything, like `cp -a`.
    pub fn all() -> Self {
        Preserve {
            mode: true,
            timestamps: true,
            ownership: true,
            xattr: true,
            links: true,
        }
    }

    /// Only what `names` lists; unknown names are an error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut preserve = Preserve {
            mode: false,
            timestamps: false,
            ownership: false,
            xattr: false,
            links: false,
        };
        for name in names {
            match name {
                "mode" => preserve.mode = true,
                "timestamps" => preserve.timestamps = true,
                "ownership" => preserve.ownership = true,
                "xattr" => preserve.xattr = true,
                "links" => preserve.links = true,
                "all" => preserve = Preserve::all(),
                other => {
                    return Err(EngineError::invalid(format!(
                        "unknown preserve item {other:?} (known: mode, timestamps, ownership, xattr, links, all)"
                    )))
                }
            }
        }
        Ok(preserve)
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
