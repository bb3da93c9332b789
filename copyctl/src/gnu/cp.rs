//! cp: the operands worked out into targets and checked as GNU cp checks
//! them, then copied by copyd (submit.rs), or linked here (-l, -s).
//!
//! cp's defaults, which copyd's own `copy` does not share: an existing file
//! is overwritten (copyd replaces it atomically, by rename), an existing
//! directory is merged into, timestamps are not kept unless asked, and
//! nothing waits for the disk unless --sync.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zbus::Variant;

use super::args::{Backup, Deref, GnuArgs, Update, When};
use super::local::{self, absolute, has_trailing_slash, without_trailing_slashes};
use super::submit::{self, Item, Modes};
use super::{quote, why, Front};

/// Where the operands go: into a directory, or onto one target.
pub enum Destination {
    Into(PathBuf),
    Onto(PathBuf),
}

/// Splits the operands into sources and where they go, with cp's and mv's
/// messages for what does not add up.
pub fn destination(front: &mut Front, args: &GnuArgs) -> Option<(Vec<PathBuf>, Destination)> {
    let mut operands: Vec<PathBuf> = args.operands.iter().map(PathBuf::from).collect();
    let program = front.program.clone();
    let usage = |front: &mut Front, message: String| {
        front.error(message);
        eprintln!("Try '{program} --help' for more information.");
    };
    if let Some(dir) = &args.target_directory {
        if args.no_target_directory {
            usage(
                front,
                "cannot combine --target-directory (-t) and --no-target-directory (-T)".into(),
            );
            return None;
        }
        if operands.is_empty() {
            usage(front, "missing file operand".into());
            return None;
        }
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            let why = match fs::metadata(&dir) {
                Err(err) => why(&err),
                Ok(_) => "Not a directory".into(),
            };
            front.error(format!("target directory {}: {why}", quote(&dir)));
            return None;
        }
        return Some((operands, Destination::Into(dir)));
    }
    match operands.len() {
        0 => {
            usage(front, "missing file operand".into());
            return None;
        }
        1 => {
            usage(
                front,
                format!(
                    "missing destination file operand after {}",
                    quote(&operands[0])
                ),
            );
            return None;
        }
        _ => {}
    }
    let last = operands.pop().expect("two operands or more");
    if args.no_target_directory {
        if operands.len() > 1 {
            usage(front, format!("extra operand {}", quote(&operands[1])));
            return None;
        }
        return Some((operands, Destination::Onto(last)));
    }
    if last.is_dir() {
        return Some((operands, Destination::Into(last)));
    }
    if operands.len() > 1 || (args.parents && args.tool == super::Tool::Cp) {
        if args.parents {
            usage(
                front,
                "with --parents, the destination must be a directory".into(),
            );
        } else {
            let why = match fs::metadata(&last) {
                Err(err) => why(&err),
                Ok(_) => "Not a directory".into(),
            };
            front.error(format!("target {}: {why}", quote(&last)));
        }
        return None;
    }
    Some((operands, Destination::Onto(last)))
}

/// The options every job of this cp run takes.
fn options(args: &GnuArgs) -> HashMap<&'static str, Variant<'static>> {
    let mut options = HashMap::new();
    options.insert("recursive", Variant::Bool(args.recursive));
    let keep = args.keep;
    let preserve: Vec<String> = [
        (keep.mode, "mode"),
        (keep.ownership, "ownership"),
        (keep.timestamps, "timestamps"),
        (keep.links, "links"),
        (keep.xattr, "xattr"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| (*name).to_owned())
    .collect();
    options.insert("preserve", Variant::from(preserve));
    // cp writes into a file it overwrites, which keeps its mode and owner
    // unless -p (or --preserve=mode, ownership) asks for the source's;
    // copyd renames a new file over it, given those first.
    if !args.mode_kept && !keep.ownership {
        options.insert("keep-replaced-attributes", Variant::Bool(true));
    }
    // cp does not wait for the disk; every file is still placed whole.
    options.insert("sync", Variant::Bool(args.sync));
    if args.sparse == When::Never {
        options.insert("sparse", Variant::Bool(false));
    }
    let engine = match (&args.engine, args.reflink) {
        (Some(engine), _) => Some(engine.clone()),
        (None, When::Always) => Some("reflink".to_owned()),
        // No engine of the chain but reflink shares extents.
        (None, When::Never) => Some("standard".to_owned()),
        (None, When::Auto) => None,
    };
    if let Some(engine) = engine {
        options.insert("engine", Variant::from(engine));
    }
    if let Some(rate) = args.rate_limit {
        options.insert("rate-limit", Variant::U64(rate));
    }
    options
}

/// The conflict policy for what copyd meets inside a merged directory.
pub fn tree_policy(args: &GnuArgs) -> String {
    if let Some(policy) = &args.on_conflict {
        return policy.clone();
    }
    match (args.update, args.interactive, args.backup) {
        (Update::None, _, _) => "skip",
        (_, true, _) => "ask",
        (Update::Older, _, _) => "update",
        (_, _, Backup::None) => "overwrite",
        _ => "backup",
    }
    .to_owned()
}

pub async fn run(front: &mut Front, args: &GnuArgs) {
    let Some((sources, destination)) = destination(front, args) else {
        return;
    };
    let mut items = Vec::new();
    // Targets of this run: whether each came from a symlink copied as one,
    // and from which source.
    let mut made: HashMap<PathBuf, (bool, PathBuf)> = HashMap::new();
    for source in sources {
        let source = match args.strip_trailing_slashes {
            true => without_trailing_slashes(&source),
            false => source,
        };
        let shown_target = match &destination {
            Destination::Onto(target) => target.clone(),
            // SRC/. names SRC's entries: they go into DIR itself.
            Destination::Into(dir) if ends_in_dot(&source) && !args.parents => dir.clone(),
            Destination::Into(dir) => {
                let name = match args.parents {
                    true => without_trailing_slashes(&source),
                    false => match without_trailing_slashes(&source).file_name() {
                        Some(name) => PathBuf::from(name),
                        // "." or "..": the directory's own name.
                        None => match absolute(&source)
                            .ok()
                            .and_then(|a| a.file_name().map(PathBuf::from))
                        {
                            Some(name) => name,
                            None => {
                                front.error(format!(
                                    "cannot copy {}: it has no name",
                                    quote(&source)
                                ));
                                continue;
                            }
                        },
                    },
                };
                let name = name.strip_prefix("/").unwrap_or(&name).to_path_buf();
                dir.join(name)
            }
        };
        // Two sources onto one name (`cp a/x b/x dir`): the first is
        // copied, the second refused, as cp does.
        let key = real_parent_join(&shown_target);
        let real_source = real_parent_join(&source);
        if let Some((was_link, earlier)) = made.get(&key) {
            // The same source twice (`cp a a dir`): said, not a failure.
            if *earlier == real_source {
                eprintln!(
                    "{}: warning: source file {} specified more than once",
                    front.program,
                    quote(&source)
                );
                continue;
            }
            front.error(match was_link {
                true => format!(
                    "will not copy {} through just-created symlink {}",
                    quote(&source),
                    quote(&shown_target)
                ),
                false => format!(
                    "will not overwrite just-created {} with {}",
                    quote(&shown_target),
                    quote(&source)
                ),
            });
            continue;
        }
        let is_link = !follows(args, &source)
            && fs::symlink_metadata(&source).is_ok_and(|m| m.file_type().is_symlink());
        made.insert(key, (is_link, real_source));
        if let Some(item) = check(front, args, &source, &shown_target, &destination) {
            items.push(item);
        }
        items.append(&mut front.pending);
    }
    let request = submit::Request {
        operation: "copy",
        options: options(args),
        address: args.address.clone(),
        show_progress: args.progress,
        verbose: args.verbose.then_some(super::verbose::Style::Cp),
    };
    let (items, twins) = match args.keep.links {
        true => super::links::hard_link_twins(items),
        false => (items, Vec::new()),
    };
    submit::run(front, &request, items).await;
    for (first, twin) in twins {
        super::links::link_twin(front, args, &first, &twin);
    }
    let made = std::mem::take(&mut front.made);
    super::split::finish(&made, args.keep, args.mode_kept, local::umask());
}

/// Whether cp follows `source` if it is a symlink: one named on the
/// command line unless copying recursively (-r implies -P), or told
/// -H/-L/-P/-d; "link/" names what the link points to, whatever -P says.
fn follows(args: &GnuArgs, source: &Path) -> bool {
    let follow = match args.deref {
        // cp --link dereferences its operands even with -R.
        Deref::Default => !args.recursive || args.hard_link,
        Deref::Never => false,
        Deref::CommandLine | Deref::Always => true,
    };
    (follow || has_trailing_slash(source)) && !args.symbolic_link
}

/// Whether `path` is written `.` or `DIR/.`.
fn ends_in_dot(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    bytes == b"." || bytes.ends_with(b"/.")
}

/// `path`'s metadata, following a symlink when `follow`.
fn stat(path: &Path, follow: bool) -> std::io::Result<Metadata> {
    match follow {
        true => fs::metadata(path),
        false => fs::symlink_metadata(path),
    }
}

fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Checks one source against its target as cp does, makes what cp makes
/// before copying (parent directories for --parents, a backup, a link),
/// and returns the item for copyd, with its conflict policy.
fn check(
    front: &mut Front,
    args: &GnuArgs,
    source: &Path,
    target: &Path,
    destination: &Destination,
) -> Option<(Item, String)> {
    let follow = follows(args, source);
    let source_meta = match stat(source, follow) {
        Ok(meta) => meta,
        Err(err) => {
            front.error(format!("cannot stat {}: {}", quote(source), why(&err)));
            return None;
        }
    };
    let is_dir = source_meta.is_dir();
    if is_dir && !args.recursive && !args.symbolic_link {
        front.error(format!(
            "-r not specified; omitting directory {}",
            quote(source)
        ));
        return None;
    }
    if args.parents {
        if let Destination::Into(dir) = destination {
            local::make_parents(front, args, dir, source)?;
        }
    }
    let target_lmeta = fs::symlink_metadata(target).ok();
    let target_meta = fs::metadata(target).ok();
    if let Some(existing) = &target_meta {
        let target_entry = real_parent_join(target);
        let one_name = real_parent_join(source) == target_entry;
        // The target entry is the very file the source's data is in (the
        // source itself, or a symlink to the target): removing, backing up
        // or replacing it would lose the data, or leave a link to itself.
        let holds_the_data = !is_dir
            && fs::canonicalize(without_trailing_slashes(source))
                .is_ok_and(|real| real == target_entry);
        let target_is_file = target_lmeta.as_ref().is_some_and(|m| !m.is_dir());
        // cp -s replaces a symlink to its source (by another link): only
        // the very same entry is the same file to it.
        let same = match args.symbolic_link {
            // (A hard link to the file is the file; to a symlink, not.)
            true => {
                one_name
                    || holds_the_data
                    || target_lmeta
                        .as_ref()
                        .is_some_and(|t| same_file(t, &source_meta) && !t.file_type().is_symlink())
            }
            false => same_file(&source_meta, existing) || holds_the_data,
        };
        // cp -l: the target entry is a hard link to the file already:
        // nothing to do. Another name for it (a symlink to it) is an
        // existing target like any other (-f, -b replace it).
        let linked_already = target_lmeta
            .as_ref()
            .is_some_and(|t| same_file(t, &source_meta));
        // So is a symlink linked as itself (-d) onto the file it names.
        let link_onto_its_file = !follow
            && source_meta.file_type().is_symlink()
            && fs::metadata(source).is_ok_and(|m| same_file(&m, existing));
        let backup_back = one_name && args.force && args.backup != Backup::None;
        if args.hard_link && (same && linked_already && !backup_back || link_onto_its_file) {
            return None;
        }
        // cp -l onto another name of the file is no same-file error.
        let same = same && (one_name || !args.hard_link);
        // Otherwise refused, before anything is removed or backed up (cp -sf
        // foo foo must not leave foo a link to itself). Allowed: cp -fb F F
        // (the backup is copied back); onto another name of the source's
        // file (a symlink to it, a hard link) with a backup or
        // --remove-destination.
        let allowed = !args.symbolic_link
            && target_is_file
            && match holds_the_data {
                // A link copied as a link onto its own target (-bd): the
                // backup keeps the data, as cp lets it.
                true => {
                    args.backup != Backup::None
                        && (one_name && args.force
                            || !follow && source_meta.file_type().is_symlink())
                }
                false => args.backup != Backup::None || args.remove_destination,
            };
        if same && !allowed {
            front.error(format!(
                "{} and {} are the same file",
                quote(source),
                quote(target)
            ));
            return None;
        }
        if is_dir && !existing.is_dir() {
            front.error(format!(
                "cannot overwrite non-directory {} with directory {}",
                quote(target),
                quote(source)
            ));
            return None;
        }
        if !is_dir && existing.is_dir() && !args.symbolic_link {
            front.error(format!(
                "cannot overwrite directory {} with non-directory",
                quote(target)
            ));
            return None;
        }
    }
    if is_dir {
        let (real_source, real_target) = (absolute(source).ok()?, real_parent_join(target));
        let real_source = real_source.canonicalize().unwrap_or(real_source);
        if real_target.starts_with(&real_source) {
            front.error(format!(
                "cannot copy a directory, {}, into itself, {}",
                quote(source),
                quote(target)
            ));
            return None;
        }
    }
    if !is_dir && target_lmeta.is_none() && has_trailing_slash(target) {
        front.error(format!(
            "cannot create regular file {}: Not a directory",
            quote(target)
        ));
        return None;
    }
    let mut policy = tree_policy(args);
    // Where the data really comes from and goes, when not source and target.
    let mut copy_from: Option<PathBuf> = None;
    let mut through: Option<PathBuf> = None;
    let mut note = String::new();
    let exists_as_file = target_lmeta.as_ref().is_some_and(|m| !m.is_dir()) && !is_dir;
    let links = args.symbolic_link || args.hard_link;
    if exists_as_file {
        let existing = target_meta.as_ref().or(target_lmeta.as_ref())?;
        match args.update {
            Update::None => return None,
            Update::Older
                if (existing.mtime(), existing.mtime_nsec())
                    >= (source_meta.mtime(), source_meta.mtime_nsec()) =>
            {
                return None
            }
            _ => {}
        }
        if args.interactive && !local::ask_overwrite(&front.program, target) {
            return None;
        }
        // Answered here, not asked again by the job.
        if policy == "ask" || policy == "update" || policy == "skip" {
            policy = "overwrite".into();
        }
        if let Some(backup) = local::backup_name(target, args.backup, &args.suffix) {
            if fs::metadata(&backup).is_ok_and(|b| same_file(&b, &source_meta)) {
                front.error(format!(
                    "backing up {} might destroy source;  {} not copied",
                    quote(target),
                    quote(source)
                ));
                return None;
            }
            // cp --backup F F: the backup is what gets copied back.
            if real_parent_join(source) == real_parent_join(target) {
                copy_from = Some(backup.clone());
            }
            if let Err(err) = fs::rename(target, &backup) {
                front.error(format!("cannot backup {}: {}", quote(target), why(&err)));
                return None;
            }
            note = format!(" (backup: {})", quote(&backup));
        } else if links {
            // link_here replaces the target, or refuses to (without -f).
        } else if args.remove_destination {
            if let Err(err) = fs::remove_file(target) {
                front.error(format!("cannot remove {}: {}", quote(target), why(&err)));
                return None;
            }
        } else if source_meta.is_file()
            && target_lmeta
                .as_ref()
                .is_some_and(|m| m.file_type().is_symlink())
        {
            // cp writes through a symlink at the target; a dangling one it
            // refuses (POSIXLY_CORRECT: makes the file it names); a loop it
            // replaces.
            let looping = fs::metadata(target)
                .is_err_and(|e| e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()));
            if target_meta.is_none() && !looping {
                if std::env::var_os("POSIXLY_CORRECT").is_none() {
                    front.error(format!(
                        "not writing through dangling symlink {}",
                        quote(target)
                    ));
                    return None;
                }
                if let Ok(named) = fs::read_link(target) {
                    let dir = target.parent().unwrap_or(Path::new(""));
                    through = Some(dir.join(named));
                }
            }
        }
    }
    // A fifo or a device copied as a file (without -R, or with
    // --copy-contents): its bytes read to their end, here (contents.rs).
    let read_as_file = super::contents::is_special(&source_meta)
        && (!args.recursive || args.copy_contents)
        && !links
        && !args.attributes_only;
    // A fifo or a device at the target (/dev/null, a pipe) is written
    // to, as cp opens it, never replaced: by a file's data (a fifo copied
    // as a fifo, by -R, replaces it).
    if (source_meta.is_file() || read_as_file)
        && !args.remove_destination
        && !args.symbolic_link
        && !args.hard_link
        && target_meta.as_ref().is_some_and(|m| {
            let t = m.file_type();
            !t.is_file() && !t.is_dir()
        })
    {
        local::write_into(front, source, target, args.verbose);
        return None;
    }
    if read_as_file {
        let what = super::contents::Contents {
            source: source.to_path_buf(),
            target: through.clone().unwrap_or(target.to_path_buf()),
            shown_source: source.to_path_buf(),
            shown_target: target.to_path_buf(),
            source_mode: source_meta.mode(),
        };
        super::contents::copy(front, args, &what);
        return None;
    }
    if args.attributes_only && is_dir {
        super::attributes::tree(front, args, source, target, (source, target));
        return None;
    }
    if args.attributes_only && !is_dir {
        local::attributes_only(front, args, source, target, follow, target_lmeta.is_some());
        return None;
    }
    if args.symbolic_link || args.hard_link {
        // link(2) does not follow a symlink: where cp would, its target.
        let linked = match (&copy_from, follow && args.hard_link) {
            (Some(backup), _) if args.hard_link => backup.clone(),
            (_, true) => fs::canonicalize(source).unwrap_or(source.to_path_buf()),
            _ => source.to_path_buf(),
        };
        super::links::link_here(
            front,
            args,
            &linked,
            source,
            target,
            target_lmeta.is_some(),
            &note,
        );
        return None;
    }
    let absolute_source = match absolute(copy_from.as_deref().unwrap_or(source)) {
        Ok(path)
            if follow
                && fs::symlink_metadata(without_trailing_slashes(&path))
                    .is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            path.canonicalize().unwrap_or(path)
        }
        Ok(path) => without_trailing_slashes(&path),
        Err(err) => {
            front.error(format!("cannot stat {}: {}", quote(source), why(&err)));
            return None;
        }
    };
    let mut absolute_target = match absolute(&without_trailing_slashes(
        through.as_deref().unwrap_or(target),
    )) {
        Ok(path) => path,
        Err(err) => {
            front.error(format!(
                "cannot create regular file {}: {}",
                quote(target),
                why(&err)
            ));
            return None;
        }
    };
    // Through a symlink at the target to the file it names.
    // (A symlink copied as one replaces the link instead.)
    if source_meta.is_file() && note.is_empty() && !args.remove_destination {
        if let Some(true) = target_lmeta.as_ref().map(|m| m.file_type().is_symlink()) {
            if let Ok(real) = absolute_target.canonicalize() {
                absolute_target = real;
            }
        }
    }
    let joins_directory = absolute_target.file_name() == absolute_source.file_name()
        && absolute_target.parent().is_some_and(Path::is_dir)
        && absolute_target != absolute_source;
    // -L, -x: a tree with symlinks in it, or mount points, is split so
    // that copyd meets none (split.rs).
    if is_dir && (args.deref == Deref::Always || args.one_file_system || args.copy_contents) {
        let rules = super::split::Rules {
            follow: args.deref == Deref::Always,
            device: args.one_file_system.then(|| source_meta.dev()),
            contents: args.copy_contents,
        };
        let split = super::split::split(
            front,
            &absolute_source
                .canonicalize()
                .unwrap_or(absolute_source.clone()),
            &absolute_target,
            source,
            target,
            &policy,
            rules,
        );
        front.pending.extend(split.items);
        front.made.extend(split.made);
        // Read now, into the directories the split made.
        for what in &split.contents {
            super::contents::copy(front, args, what);
        }
        return None;
    }
    // A directory onto one of another name: copyd would copy it into the
    // target, cp merges it into the target: each entry goes in instead.
    if is_dir && !joins_directory && target_meta.as_ref().is_some_and(Metadata::is_dir) {
        return merge_entries(
            front,
            args,
            source,
            target,
            &absolute_source,
            &absolute_target,
            policy,
        );
    }
    Some((
        Item {
            source: absolute_source,
            target: absolute_target,
            shown_source: source.to_path_buf(),
            shown_target: target.to_path_buf(),
            joins_directory,
            note,
            modes: match (target_lmeta.is_some(), args.keep.mode, args.mode_kept) {
                // What stood there is merged into or replaced: left as is.
                (true, _, _) | (false, true, true) => Modes::AsCopied,
                (false, true, false) => Modes::LessUmask,
                (false, false, _) => Modes::Default,
            },
        },
        policy,
    ))
}

/// The directory entries of `source` as items into `target` (a directory
/// copied onto an existing one of another name: `cp -rT a b`, `cp -r a/. b`).
/// They go to `front.pending`, one item per entry.
fn merge_entries(
    front: &mut Front,
    _args: &GnuArgs,
    source: &Path,
    target: &Path,
    absolute_source: &Path,
    absolute_target: &Path,
    policy: String,
) -> Option<(Item, String)> {
    let entries = match fs::read_dir(absolute_source) {
        Ok(entries) => entries,
        Err(err) => {
            front.error(format!("cannot access {}: {}", quote(source), why(&err)));
            return None;
        }
    };
    let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
    names.sort();
    front.pending.extend(names.into_iter().map(|name| {
        (
            Item {
                source: absolute_source.join(&name),
                target: absolute_target.join(&name),
                shown_source: source.join(&name),
                shown_target: target.join(&name),
                joins_directory: true,
                note: String::new(),
                modes: Modes::AsCopied,
            },
            policy.clone(),
        )
    }));
    None
}

/// `target` with its parent directory's real path (the name not followed).
fn real_parent_join(target: &Path) -> PathBuf {
    let target = without_trailing_slashes(target);
    let absolute = absolute(&target).unwrap_or(target);
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .unwrap_or(parent.to_path_buf())
            .join(name),
        _ => absolute,
    }
}
