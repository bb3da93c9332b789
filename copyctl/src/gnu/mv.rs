//! mv: the operands worked out and checked as GNU mv checks them, then
//! moved by copyd (a rename on one file system; across file systems a
//! copy, a sync, then the source deleted: copyd never deletes a source
//! before its copy is durable, so a cross-device mv waits for the disk even
//! without --sync).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zbus::Variant;

use super::args::{GnuArgs, Update};
use super::cp::{destination, Destination};
use super::local::{self, absolute, without_trailing_slashes};
use super::submit::{self, Item};
use super::{quote, why, Front};

pub async fn run(front: &mut Front, args: &GnuArgs) {
    let Some((sources, destination)) = destination(front, args) else {
        return;
    };
    let mut items = Vec::new();
    for source in sources {
        let source = match args.strip_trailing_slashes {
            true => without_trailing_slashes(&source),
            false => source,
        };
        let target = match &destination {
            Destination::Onto(target) => target.clone(),
            Destination::Into(dir) => match without_trailing_slashes(&source).file_name() {
                Some(name) => dir.join(name),
                None => {
                    front.error(format!("cannot move {}: it has no name", quote(&source)));
                    continue;
                }
            },
        };
        if let Some(item) = check(front, args, &source, &target) {
            items.push(item);
        }
    }
    let mut options = HashMap::new();
    // What a rename keeps, a copy across file systems keeps too.
    options.insert("preserve", Variant::from(vec!["all".to_owned()]));
    options.insert("recursive", Variant::Bool(true));
    if let Some(engine) = &args.engine {
        options.insert("engine", Variant::from(engine.clone()));
    }
    if let Some(rate) = args.rate_limit {
        options.insert("rate-limit", Variant::U64(rate));
    }
    let request = submit::Request {
        operation: "move",
        options,
        address: args.address.clone(),
        show_progress: args.progress,
        verbose: args.verbose.then_some(super::verbose::Style::Mv),
    };
    submit::run(front, &request, items).await;
}

fn check(
    front: &mut Front,
    args: &GnuArgs,
    source: &Path,
    target: &Path,
) -> Option<(Item, String)> {
    let source_meta = match fs::symlink_metadata(source) {
        Ok(meta) => meta,
        Err(err) => {
            front.error(format!("cannot stat {}: {}", quote(source), why(&err)));
            return None;
        }
    };
    let is_dir = source_meta.is_dir();
    let absolute_source = match absolute(&without_trailing_slashes(source)) {
        Ok(path) => path,
        Err(err) => {
            front.error(format!("cannot stat {}: {}", quote(source), why(&err)));
            return None;
        }
    };
    let absolute_target = match absolute(&without_trailing_slashes(target)) {
        Ok(path) => path,
        Err(err) => {
            front.error(format!(
                "cannot move {} to {}: {}",
                quote(source),
                quote(target),
                why(&err)
            ));
            return None;
        }
    };
    if is_dir {
        let real_source = absolute_source
            .canonicalize()
            .unwrap_or(absolute_source.clone());
        let real_target = match (absolute_target.parent(), absolute_target.file_name()) {
            (Some(parent), Some(name)) => parent
                .canonicalize()
                .unwrap_or(parent.to_path_buf())
                .join(name),
            _ => absolute_target.clone(),
        };
        if real_target.starts_with(&real_source) && real_target != real_source {
            front.error(format!(
                "cannot move {} to a subdirectory of itself, {}",
                quote(source),
                quote(target)
            ));
            return None;
        }
    }
    let mut note = String::new();
    if let Ok(existing) = fs::symlink_metadata(target) {
        // A symlink onto the file it names: moving it would leave it
        // dangling (mv says "the same file" for that too).
        let names_target = source_meta.file_type().is_symlink()
            && !existing.file_type().is_symlink()
            && fs::metadata(source)
                .is_ok_and(|m| m.dev() == existing.dev() && m.ino() == existing.ino());
        let same = names_target
            || existing.dev() == source_meta.dev() && existing.ino() == source_meta.ino();
        // With a backup, a hard link onto its twin is moved like any file.
        if same && (args.backup == super::args::Backup::None || absolute_source == absolute_target)
        {
            front.error(format!(
                "{} and {} are the same file",
                quote(source),
                quote(target)
            ));
            return None;
        }
        // Asked before the type checks, as mv does: a "no" is no failure,
        // whatever stands there.
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
        match (is_dir, existing.is_dir()) {
            (true, false) => {
                front.error(format!(
                    "cannot overwrite non-directory {} with directory {}",
                    quote(target),
                    quote(source)
                ));
                return None;
            }
            (false, true) => {
                front.error(format!(
                    "cannot overwrite directory {} with non-directory",
                    quote(target)
                ));
                return None;
            }
            _ => {}
        }
        let target = without_trailing_slashes(target);
        if let Some(backup) = local::backup_name(&target, args.backup, &args.suffix) {
            if fs::symlink_metadata(&backup)
                .is_ok_and(|b| b.dev() == source_meta.dev() && b.ino() == source_meta.ino())
            {
                front.error(format!(
                    "backing up {} might destroy source;  {} not moved",
                    quote(&target),
                    quote(source)
                ));
                return None;
            }
            if let Err(err) = fs::rename(&target, &backup) {
                front.error(format!("cannot backup {}: {}", quote(target), why(&err)));
                return None;
            }
            note = format!(" (backup: {})", quote(&backup));
        } else if is_dir {
            // rename(2) replaces an empty directory and refuses a full one;
            // copyd would merge into either.
            if let Err(err) = fs::remove_dir(&target) {
                front.error(format!(
                    "cannot move {} to {}: {}",
                    quote(source),
                    quote(target),
                    why(&err)
                ));
                return None;
            }
        }
    }
    if args.no_copy {
        let parent = absolute_target.parent().unwrap_or(Path::new("/"));
        if fs::metadata(parent).is_ok_and(|p| p.dev() != source_meta.dev()) {
            front.error(format!(
                "cannot move {} to {}: Invalid cross-device link",
                quote(source),
                quote(target)
            ));
            return None;
        }
    }
    let joins_directory = absolute_target.file_name() == absolute_source.file_name()
        && absolute_target.parent().is_some_and(Path::is_dir);
    let policy = args
        .on_conflict
        .clone()
        .unwrap_or_else(|| "overwrite".into());
    Some((
        Item {
            source: absolute_source,
            target: absolute_target,
            shown_source: PathBuf::from(source),
            shown_target: PathBuf::from(target),
            joins_directory,
            note,
            modes: submit::Modes::AsCopied,
        },
        policy,
    ))
}
