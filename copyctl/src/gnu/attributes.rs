//! `cp -R --attributes-only`: a tree's shape and attributes without its
//! data, as GNU cp gives it. Directories are made (or merged into),
//! symlinks and special files made as themselves, each regular file made
//! empty when missing and left with its data when it exists; modes, and
//! owners and times when kept, as cp sets them. No byte is copied, so
//! copyd has nothing to do: it is done here, with the user's rights.

use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::args::GnuArgs;
use super::split::MadeDirectory;
use super::{local, quote, why, Front};

/// Makes `target` from the tree `source` (shown as the user wrote them),
/// attributes only. Directories made get their metadata after their
/// entries (`front.made`, given it once all is done).
pub fn tree(
    front: &mut Front,
    args: &GnuArgs,
    source: &Path,
    target: &Path,
    shown: (&Path, &Path),
) {
    let meta = match fs::symlink_metadata(source) {
        Ok(meta) => meta,
        Err(err) => return front.error(format!("cannot stat {}: {}", quote(shown.0), why(&err))),
    };
    let existing = fs::symlink_metadata(target).ok();
    if args.verbose {
        println!("{} -> {}", quote(shown.0), quote(shown.1));
    }
    if meta.is_dir() {
        return directory(front, args, source, target, shown, meta, existing);
    }
    let kind = meta.file_type();
    if kind.is_fifo() || kind.is_char_device() || kind.is_block_device() || kind.is_socket() {
        if existing.is_none() {
            special(front, args, target, shown.1, &meta);
        }
        return;
    }
    // A regular file or a symlink: as for a single file.
    local::attributes_only(front, args, source, target, false, existing.is_some());
}

fn directory(
    front: &mut Front,
    args: &GnuArgs,
    source: &Path,
    target: &Path,
    shown: (&Path, &Path),
    meta: Metadata,
    existing: Option<Metadata>,
) {
    match existing {
        // Merged into, its own attributes left (as cp leaves them).
        Some(existing) if existing.is_dir() => {}
        Some(_) => {
            return front.error(format!(
                "cannot overwrite non-directory {} with directory {}",
                quote(shown.1),
                quote(shown.0)
            ))
        }
        None => {
            if let Err(err) = super::split::private_dir(target) {
                return front.error(format!(
                    "cannot create directory {}: {}",
                    quote(shown.1),
                    why(&err)
                ));
            }
            front.made.push(MadeDirectory {
                target: target.to_path_buf(),
                source: meta,
            });
        }
    }
    let mut names: Vec<_> = match fs::read_dir(source) {
        Ok(entries) => entries.flatten().map(|e| e.file_name()).collect(),
        Err(err) => return front.error(format!("cannot access {}: {}", quote(shown.0), why(&err))),
    };
    names.sort();
    for name in names {
        tree(
            front,
            args,
            &source.join(&name),
            &target.join(&name),
            (&shown.0.join(&name), &shown.1.join(&name)),
        );
    }
}

/// A fifo, device or socket made as the source is, with cp's mode.
fn special(front: &mut Front, args: &GnuArgs, target: &Path, shown: &Path, meta: &Metadata) {
    let kind = meta.file_type();
    let file_type = if kind.is_fifo() {
        rustix::fs::FileType::Fifo
    } else if kind.is_char_device() {
        rustix::fs::FileType::CharacterDevice
    } else if kind.is_block_device() {
        rustix::fs::FileType::BlockDevice
    } else {
        rustix::fs::FileType::Socket
    };
    let umask = local::umask();
    let mode = match args.mode_kept {
        true => meta.mode() & 0o7777,
        false => meta.mode() & 0o777 & !umask,
    };
    let made = rustix::fs::mknodat(
        rustix::fs::CWD,
        target,
        file_type,
        rustix::fs::Mode::from_raw_mode(mode),
        meta.rdev(),
    )
    .map_err(std::io::Error::from)
    // mknod's mode is cut by the umask: set it as cp does.
    .and_then(|()| fs::set_permissions(target, fs::Permissions::from_mode(mode)))
    .and_then(|()| match args.keep.ownership {
        true => std::os::unix::fs::lchown(target, Some(meta.uid()), Some(meta.gid())),
        false => Ok(()),
    });
    if let Err(err) = made {
        front.error(format!(
            "cannot create special file {}: {}",
            quote(shown),
            why(&err)
        ));
    }
}
