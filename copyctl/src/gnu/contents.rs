//! A fifo or a device read as a file: what cp does with a special file it
//! is not copying as one (without -R, or with -R and --copy-contents). The
//! bytes are read here, in copyctl's process with the user's own rights
//! (copyd copies special files as special files and never opens them:
//! reading a fifo waits for a writer, a device may never end, which a
//! daemon job must not), into a new file under a temporary name beside the
//! target, renamed into place once whole, as copyd places its copies.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::args::GnuArgs;
use super::{quote, why, Front};

/// Whether cp would read `meta`'s file for its contents when it copies it
/// as a file: a fifo, a character or a block device (not a socket: it
/// cannot be opened).
pub fn is_special(meta: &Metadata) -> bool {
    let kind = meta.file_type();
    kind.is_fifo() || kind.is_char_device() || kind.is_block_device()
}

/// One special file to read into a regular one.
#[derive(Debug, Clone)]
pub struct Contents {
    pub source: PathBuf,
    pub target: PathBuf,
    pub shown_source: PathBuf,
    pub shown_target: PathBuf,
    /// The source's mode bits.
    pub source_mode: u32,
}

/// The mode cp gives a new copy: the source's (-p, --preserve=mode), the
/// source's less the umask (cp's default), or 0666 less the umask
/// (--no-preserve=mode).
fn new_mode(args: &GnuArgs, source_mode: u32) -> u32 {
    let umask = super::local::umask();
    match (args.keep.mode, args.mode_kept) {
        (true, true) => source_mode & 0o7777,
        (true, false) => source_mode & 0o777 & !umask,
        (false, _) => 0o666 & !umask,
    }
}

/// Reads `what.source` to its end into a new file that then replaces
/// `what.target`; says why not in cp's words. With -v, cp's line.
pub fn copy(front: &mut Front, args: &GnuArgs, what: &Contents) {
    match copy_into_place(what, new_mode(args, what.source_mode)) {
        Ok(()) if args.verbose => println!(
            "{} -> {}",
            quote(&what.shown_source),
            quote(&what.shown_target)
        ),
        Ok(()) => {}
        Err(message) => front.error(message),
    }
}

fn copy_into_place(what: &Contents, mode: u32) -> Result<(), String> {
    if fs::symlink_metadata(&what.target).is_ok_and(|m| m.is_dir()) {
        return Err(format!(
            "cannot overwrite directory {} with non-directory",
            quote(&what.shown_target)
        ));
    }
    let mut from = File::open(&what.source).map_err(|err| {
        format!(
            "cannot open {} for reading: {}",
            quote(&what.shown_source),
            why(&err)
        )
    })?;
    let temp = temp_beside(&what.target);
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|err| {
            format!(
                "cannot create regular file {}: {}",
                quote(&what.shown_target),
                why(&err)
            )
        })?;
    let written = pump(&mut from, &mut to, what)
        .and_then(|()| {
            to.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|err| {
                    format!(
                        "setting permissions for {}: {}",
                        quote(&what.shown_target),
                        why(&err)
                    )
                })
        })
        .and_then(|()| {
            fs::rename(&temp, &what.target).map_err(|err| {
                format!(
                    "cannot create regular file {}: {}",
                    quote(&what.shown_target),
                    why(&err)
                )
            })
        });
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Copies `from` to its end into `to`, saying which side failed as cp
/// does ("error reading", "error writing").
fn pump(from: &mut File, to: &mut File, what: &Contents) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut buffer = vec![0u8; 128 << 10];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(format!(
                    "error reading {}: {}",
                    quote(&what.shown_source),
                    why(&err)
                ))
            }
        };
        to.write_all(&buffer[..n])
            .map_err(|err| format!("error writing {}: {}", quote(&what.shown_target), why(&err)))?;
    }
}

/// A name for the copy being read, beside `target`, that nobody else's
/// file has: hidden, with this process's id.
fn temp_beside(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let temp = format!(".copyctl-{}-{name}.tmp", std::process::id());
    target.with_file_name(temp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_special_a_file_and_a_directory_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(is_special(&fs::symlink_metadata(&fifo).unwrap()));
        assert!(is_special(&fs::metadata("/dev/null").unwrap()));
        assert!(!is_special(&fs::metadata(dir.path()).unwrap()));
    }
}
