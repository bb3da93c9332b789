//! What the fronts do in copyctl's own process, as the user: absolute
//! paths for copyd, backups of targets (-b, -S, --backup=CONTROL), the -i
//! question, hard links (-l) and symbolic links (-s). These are one system
//! call each; a job would cost more than the work.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use super::args::Backup;

/// `path` as an absolute path without `.` or `..` components, as copyd
/// takes it (it does not share our working directory). The last component
/// is not followed, so a symlink stays a symlink; a `.` or `..` in the
/// path has its directory resolved.
pub fn absolute(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let untidy = |p: &Path| {
        p.components()
            .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    };
    // std::path::absolute keeps a trailing "." and "..".
    let bytes = path.as_os_str().as_bytes();
    let ends_in_dots =
        bytes.ends_with(b"/.") || bytes.ends_with(b"/..") || bytes == b"." || bytes == b"..";
    if !untidy(&absolute) && !ends_in_dots {
        return Ok(absolute);
    }
    if ends_in_dots {
        return absolute.canonicalize();
    }
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize()?.join(name)),
        _ => absolute.canonicalize(),
    }
}

/// `path` without trailing slashes ("/" stays).
pub fn without_trailing_slashes(path: &Path) -> PathBuf {
    let mut bytes = path.as_os_str().as_bytes();
    while bytes.len() > 1 && bytes.ends_with(b"/") {
        bytes = &bytes[..bytes.len() - 1];
    }
    PathBuf::from(OsString::from_vec(bytes.to_vec()))
}

/// Whether `path` is written with a trailing slash.
pub fn has_trailing_slash(path: &Path) -> bool {
    path.as_os_str().as_bytes().ends_with(b"/")
}

/// The name a backup of `target` gets under `control`, or None for none.
pub fn backup_name(target: &Path, control: Backup, suffix: &OsString) -> Option<PathBuf> {
    let simple = || {
        let mut name = target.as_os_str().to_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    let highest = || -> Option<u64> {
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty());
        let base = target.file_name()?.as_bytes().to_vec();
        let entries = std::fs::read_dir(dir.unwrap_or(Path::new("."))).ok()?;
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let rest = name.as_bytes().strip_prefix(base.as_slice())?;
                let number = rest.strip_prefix(b".~")?.strip_suffix(b"~")?;
                std::str::from_utf8(number).ok()?.parse::<u64>().ok()
            })
            .max()
    };
    let numbered = |n: u64| {
        let mut name = target.as_os_str().to_os_string();
        name.push(format!(".~{n}~"));
        PathBuf::from(name)
    };
    match control {
        Backup::None => None,
        Backup::Simple => Some(simple()),
        Backup::Numbered => Some(numbered(highest().unwrap_or(0) + 1)),
        Backup::Existing => Some(match highest() {
            Some(n) => numbered(n + 1),
            None => simple(),
        }),
    }
}

/// Asks `PROGRAM: overwrite 'TARGET'? ` on stderr and reads the answer
/// from stdin, as cp -i: yes only for a line that starts with y or Y.
pub fn ask_overwrite(program: &str, target: &Path) -> bool {
    eprint!("{program}: overwrite {}? ", super::quote(target));
    let mut line = String::new();
    match io::stdin().read_line(&mut line) {
        Ok(_) => line.trim_start().starts_with(['y', 'Y']),
        Err(_) => false,
    }
}

/// cp -l on a tree: its directories made anew, every other entry hard
/// linked. Calls `failed` for each entry that could not be made.
pub fn hard_link_tree(source: &Path, target: &Path, failed: &mut dyn FnMut(String)) {
    let meta = match std::fs::symlink_metadata(source) {
        Ok(meta) => meta,
        Err(err) => {
            return failed(format!(
                "cannot stat {}: {}",
                super::quote(source),
                super::why(&err)
            ))
        }
    };
    if !meta.is_dir() {
        if let Err(err) = std::fs::hard_link(source, target) {
            failed(format!(
                "cannot create hard link {} to {}: {}",
                super::quote(target),
                super::quote(source),
                super::why(&err)
            ));
        }
        return;
    }
    if let Err(err) = std::fs::create_dir(target) {
        if err.kind() != io::ErrorKind::AlreadyExists || !target.is_dir() {
            return failed(format!(
                "cannot create directory {}: {}",
                super::quote(target),
                super::why(&err)
            ));
        }
    }
    let entries = match std::fs::read_dir(source) {
        Ok(entries) => entries,
        Err(err) => {
            return failed(format!(
                "cannot access {}: {}",
                super::quote(source),
                super::why(&err)
            ))
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        hard_link_tree(&source.join(&name), &target.join(&name), failed);
    }
}

/// cp onto a fifo or a device: the source's bytes written into it (as cp
/// opens an existing target and writes), not a new file put in its place.
pub fn write_into(front: &mut super::Front, source: &Path, target: &Path, verbose: bool) {
    let copied = std::fs::File::open(source)
        .map_err(|e| {
            format!(
                "cannot open {} for reading: {}",
                super::quote(source),
                super::why(&e)
            )
        })
        .and_then(|mut from| {
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .open(target)
                .map_err(|e| {
                    format!(
                        "cannot create regular file {}: {}",
                        super::quote(target),
                        super::why(&e)
                    )
                })?;
            io::copy(&mut from, &mut to)
                .map_err(|e| format!("error writing {}: {}", super::quote(target), super::why(&e)))
        });
    match copied {
        Ok(_) if verbose => println!("{} -> {}", super::quote(source), super::quote(target)),
        Ok(_) => {}
        Err(message) => front.error(message),
    }
}

/// cp --attributes-only: the target made empty if missing (its data left
/// alone if not), then given the source's mode, times and owner as kept.
/// A symlink source not followed becomes a symlink, where nothing stands.
pub fn attributes_only(
    front: &mut super::Front,
    args: &super::args::GnuArgs,
    source: &Path,
    target: &Path,
    follow: bool,
    exists: bool,
) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = match if follow {
        std::fs::metadata(source)
    } else {
        std::fs::symlink_metadata(source)
    } {
        Ok(meta) => meta,
        Err(e) => {
            return front.error(format!(
                "cannot stat {}: {}",
                super::quote(source),
                super::why(&e)
            ))
        }
    };
    if exists && args.remove_destination {
        let _ = std::fs::remove_file(target);
    }
    if meta.file_type().is_symlink() {
        let made = std::fs::read_link(source).and_then(|to| std::os::unix::fs::symlink(to, target));
        if let Err(e) = made {
            front.error(format!(
                "cannot create symbolic link {}: {}",
                super::quote(target),
                super::why(&e)
            ));
        }
        return;
    }
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
    {
        Ok(file) => file,
        Err(e) => {
            return front.error(format!(
                "cannot create regular file {}: {}",
                super::quote(target),
                super::why(&e)
            ))
        }
    };
    let keep = args.keep;
    let mut result = Ok(());
    if keep.ownership {
        result = result.and(std::os::unix::fs::fchown(
            &file,
            Some(meta.uid()),
            Some(meta.gid()),
        ));
    }
    // cp's mode: asked for (-p, -a), the source's; else a new file gets
    // the source's less the umask and an existing one keeps its own (as
    // cp, which opens it, leaves it).
    let mode = match (keep.mode, args.mode_kept, exists) {
        (true, true, _) => Some(meta.mode() & if keep.ownership { 0o7777 } else { 0o777 }),
        (true, false, false) => Some(meta.mode() & 0o777 & !umask()),
        _ => None,
    };
    if let Some(mode) = mode {
        result = result.and(file.set_permissions(std::fs::Permissions::from_mode(mode)));
    }
    if keep.timestamps {
        let times = std::fs::FileTimes::new()
            .set_accessed(meta.accessed().unwrap_or(std::time::SystemTime::now()))
            .set_modified(meta.modified().unwrap_or(std::time::SystemTime::now()));
        result = result.and(file.set_times(times));
    }
    if let Err(e) = result {
        front.error(format!(
            "preserving attributes of {}: {}",
            super::quote(target),
            super::why(&e)
        ));
    }
}

/// This process's umask, read from /proc (setting it is the only other way
/// to learn it). Unknown, 0o022.
pub fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
        })
        .unwrap_or(0o022)
}

/// Gives `path` and everything under it cp's modes for a new copy: its
/// own less `umask`, or with `default` 0666 for files and 0777 for
/// directories less `umask`; symlinks are left alone.
pub fn apply_modes(path: &Path, default: bool, umask: u32) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let base = match meta.file_type() {
        t if t.is_symlink() => return,
        _ if !default => meta.permissions().mode() & 0o7777,
        t if t.is_dir() => 0o777,
        _ => 0o666,
    };
    if base & umask != 0 || default {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(base & !umask));
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            apply_modes(&entry.path(), default, umask);
        }
    }
}

/// --parents: makes DIR/a/b for the source a/b/c, as cp does: each with
/// its source directory's mode (and owner) when those are kept, else the
/// default mode.
pub fn make_parents(
    front: &mut super::Front,
    args: &super::args::GnuArgs,
    dir: &Path,
    source: &Path,
) -> Option<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let relative = without_trailing_slashes(source);
    let parent = relative.parent()?;
    let (mut made, mut from) = (dir.to_path_buf(), std::path::PathBuf::new());
    for component in parent.components() {
        from.push(component);
        if let std::path::Component::Normal(name) = component {
            made.push(name);
            // One already there gets the source's mode too (cp -p does).
            if !made.is_dir() {
                if let Err(err) = std::fs::create_dir(&made) {
                    front.error(format!(
                        "cannot make directory {}: {}",
                        super::quote(&made),
                        super::why(&err)
                    ));
                    return None;
                }
            }
            let Ok(meta) = std::fs::metadata(&from) else {
                continue;
            };
            if args.keep.ownership {
                let _ = std::os::unix::fs::chown(&made, Some(meta.uid()), Some(meta.gid()));
            }
            if args.keep.mode {
                let mode = std::fs::Permissions::from_mode(meta.mode() & 0o7777);
                if let Err(err) = std::fs::set_permissions(&made, mode) {
                    front.error(format!(
                        "failed to preserve permissions for {}: {}",
                        super::quote(&made),
                        super::why(&err)
                    ));
                }
            }
        }
    }
    Some(())
}
