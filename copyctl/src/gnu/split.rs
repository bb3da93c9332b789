//! Trees copyd should not take whole, split here. copyd's walk never
//! follows a symlink (it reads trees through O_NOFOLLOW descriptors, on
//! purpose) and never stops at a mount point, so for cp -L (follow every
//! link) and cp -x (stay on the source's file system) a tree that has such
//! entries is split: its directories are made by copyctl, each symlink
//! becomes an item of what it points to under the link's name (-L), each
//! directory on another file system an empty directory (-x, as cp leaves
//! a mount point), and every subtree without such entries stays one item
//! for copyd. A tree with none at all is one item, as without the options.

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

/// How a tree is split.
#[derive(Clone, Copy)]
pub struct Rules {
    /// -L: symlinks followed.
    pub follow: bool,
    /// -x: the device of the source's file system, where to stay.
    pub device: Option<u64>,
    /// --copy-contents: fifos and devices are read as files, here (see
    /// contents.rs), not given to copyd (which copies them as themselves).
    pub contents: bool,
}

impl Rules {
    /// Whether `entry` (of this lstat) must be taken apart from its tree.
    fn splits_at(&self, meta: &Metadata) -> bool {
        (self.follow && meta.file_type().is_symlink())
            || (meta.is_dir() && self.device.is_some_and(|d| d != meta.dev()))
            || (self.contents && super::contents::is_special(meta))
    }
}

/// Whether anything under `dir` must be taken apart under `rules`.
fn needs_split(dir: &Path, rules: Rules) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            return false;
        };
        rules.splits_at(&meta) || meta.is_dir() && needs_split(&entry.path(), rules)
    })
}

/// What the split of one tree gives: items for copyd, directories made.
pub struct Split {
    pub items: Vec<(Item, String)>,
    pub made: Vec<MadeDirectory>,
    /// Special files to read as files (--copy-contents), in walk order.
    pub contents: Vec<super::contents::Contents>,
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
    rules: Rules,
) -> Split {
    let mut split = Split {
        items: Vec::new(),
        made: Vec::new(),
        contents: Vec::new(),
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
        rules,
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
    rules: Rules,
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
    if !needs_split(source, rules) {
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
    match private_dir(target) {
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
        if lmeta.is_dir() && rules.device.is_some_and(|d| d != lmeta.dev()) {
            // A mount point under cp -x: made, left empty.
            match private_dir(&to) {
                Ok(()) => split.made.push(MadeDirectory {
                    target: to,
                    source: lmeta,
                }),
                Err(_) if to.is_dir() => {}
                Err(err) => front.error(format!(
                    "cannot create directory {}: {}",
                    quote(&shown_to),
                    why(&err)
                )),
            }
        } else if lmeta.is_dir() || rules.follow && lmeta.file_type().is_symlink() {
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
                    rules,
                );
            } else {
                let joins = real.file_name() == Some(name.as_os_str());
                split
                    .items
                    .push((item(real, to, (shown_from, shown_to), joins), policy.into()));
            }
        } else if rules.contents && super::contents::is_special(&lmeta) {
            split.contents.push(super::contents::Contents {
                source: from,
                target: to,
                shown_source: shown_from,
                shown_target: shown_to,
                source_mode: lmeta.mode(),
            });
        } else {
            split
                .items
                .push((item(from, to, (shown_from, shown_to), true), policy.into()));
        }
    }
    ancestors.remove(&(meta.dev(), meta.ino()));
}

/// Makes a directory only its owner may enter until `finish` gives it its
/// mode (as cp makes them): nobody else sees into it while it fills, also
/// where its final mode will shut them out.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(path)
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
