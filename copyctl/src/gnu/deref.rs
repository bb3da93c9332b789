//! cp -L (and --dereference) for a tree: copyd's walk never follows a
//! symlink (it reads trees through O_NOFOLLOW descriptors, on purpose), so
//! a tree with symlinks in it is split here. Its directories are made by
//! copyctl, each symlink becomes an item of what it points to under the
//! link's name, and every subtree without a symlink in it stays one item
//! for copyd. A tree with no symlink at all is one item, as without -L.

use std::collections::HashSet;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::submit::{Item, Modes};
use super::{quote, why, Front};

/// A directory copyctl made, to be given its source's metadata once the
/// jobs that fill it are done (times last, as cp sets them).
pub struct MadeDirectory {
    pub target: PathBuf,
    pub source: Metadata,
}

/// Whether anything under `dir` is a symlink.
fn has_symlinks(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| match entry.file_type() {
        Ok(t) if t.is_symlink() => true,
        Ok(t) if t.is_dir() => has_symlinks(&entry.path()),
        _ => false,
    })
}

/// What the split of one tree gives: items for copyd, directories made.
pub struct Split {
    pub items: Vec<(Item, String)>,
    pub made: Vec<MadeDirectory>,
}

/// Splits the tree `source` (real path; shown as `shown_source`) bound for
/// `target` (shown as `shown_target`) so that copyd meets no symlink.
pub fn split(
    front: &mut Front,
    source: &Path,
    target: &Path,
    shown_source: &Path,
    shown_target: &Path,
    policy: &str,
) -> Split {
    let mut split = Split {
        items: Vec::new(),
        made: Vec::new(),
    };
    let mut ancestors = HashSet::new();
    walk(
        front,
        &mut split,
        &mut ancestors,
        source,
        target,
        shown_source,
        shown_target,
        policy,
    );
    split
}

fn item(source: PathBuf, target: PathBuf, shown: (PathBuf, PathBuf), joins: bool) -> Item {
    Item {
        source,
        target,
        shown_source: shown.0,
        shown_target: shown.1,
        joins_directory: joins,
        note: String::new(),
        list_entries: true,
        modes: Modes::AsCopied,
    }
}

#[allow(clippy::too_many_arguments)]
fn walk(
    front: &mut Front,
    split: &mut Split,
    ancestors: &mut HashSet<(u64, u64)>,
    source: &Path,
    target: &Path,
    shown_source: &Path,
    shown_target: &Path,
    policy: &str,
) {
    let meta = match fs::metadata(source) {
        Ok(meta) => meta,
        Err(err) => {
            return front.error(format!(
                "cannot stat {}: {}",
                quote(shown_source),
                why(&err)
            ))
        }
    };
    let shown = (shown_source.to_path_buf(), shown_target.to_path_buf());
    if !has_symlinks(source) {
        let joins = target.file_name() == source.file_name();
        split.items.push((
            item(source.into(), target.into(), shown, joins),
            policy.into(),
        ));
        return;
    }
    if !ancestors.insert((meta.dev(), meta.ino())) {
        return front.error(format!(
            "cannot copy cyclic symbolic link {}",
            quote(shown_source)
        ));
    }
    match fs::create_dir(target) {
        Ok(()) => split.made.push(MadeDirectory {
            target: target.into(),
            source: meta.clone(),
        }),
        Err(_) if target.is_dir() => {}
        Err(err) => {
            ancestors.remove(&(meta.dev(), meta.ino()));
            return front.error(format!(
                "cannot create directory {}: {}",
                quote(shown_target),
                why(&err)
            ));
        }
    }
    let mut names: Vec<_> = match fs::read_dir(source) {
        Ok(entries) => entries.flatten().map(|e| e.file_name()).collect(),
        Err(err) => {
            ancestors.remove(&(meta.dev(), meta.ino()));
            return front.error(format!(
                "cannot access {}: {}",
                quote(shown_source),
                why(&err)
            ));
        }
    };
    names.sort();
    for name in names {
        let (from, to) = (source.join(&name), target.join(&name));
        let (shown_from, shown_to) = (shown_source.join(&name), shown_target.join(&name));
        let Ok(lmeta) = fs::symlink_metadata(&from) else {
            continue;
        };
        if lmeta.is_dir() || lmeta.file_type().is_symlink() {
            // What a link names, followed; a directory, split in turn.
            let real = match fs::canonicalize(&from) {
                Ok(real) => real,
                Err(err) => {
                    front.error(format!("cannot stat {}: {}", quote(&shown_from), why(&err)));
                    continue;
                }
            };
            if real.is_dir() {
                walk(
                    front,
                    split,
                    ancestors,
                    &real,
                    &to,
                    &shown_from,
                    &shown_to,
                    policy,
                );
            } else {
                let joins = real.file_name() == Some(name.as_os_str());
                split
                    .items
                    .push((item(real, to, (shown_from, shown_to), joins), policy.into()));
            }
        } else {
            split
                .items
                .push((item(from, to, (shown_from, shown_to), true), policy.into()));
        }
    }
    ancestors.remove(&(meta.dev(), meta.ino()));
}

/// Gives the directories copyctl made their sources' metadata: the mode
/// (less `umask` unless kept), and the owner and times when kept.
pub fn finish(made: &[MadeDirectory], keep: super::args::Keep, mode_kept: bool, umask: u32) {
    use std::os::unix::fs::PermissionsExt;
    // Deepest first: a directory's times change as its entries are made.
    for dir in made.iter().rev() {
        if keep.ownership {
            let _ = std::os::unix::fs::chown(
                &dir.target,
                Some(dir.source.uid()),
                Some(dir.source.gid()),
            );
        }
        let mode = match mode_kept {
            true => dir.source.mode() & 0o7777,
            false => dir.source.mode() & 0o777 & !umask,
        };
        let _ = fs::set_permissions(&dir.target, fs::Permissions::from_mode(mode));
        if keep.timestamps {
            if let Ok(file) = fs::File::open(&dir.target) {
                let times = fs::FileTimes::new()
                    .set_accessed(
                        dir.source
                            .accessed()
                            .unwrap_or(std::time::SystemTime::now()),
                    )
                    .set_modified(
                        dir.source
                            .modified()
                            .unwrap_or(std::time::SystemTime::now()),
                    );
                let _ = file.set_times(times);
            }
        }
    }
}
