//! cp -l and cp -s, made in copyctl's own process (a link is one system
//! call: a job would cost more than the work), and --preserve=links
//! between items copyd copies apart.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::args::GnuArgs;
use super::local;
use super::submit::Item;
use super::{quote, why, Front};

/// An item and its conflict policy.
pub type Planned = (Item, String);

/// --preserve=links between items: copyd keeps a tree's hard links, but
/// two operands (or two files of a tree split for -L) that are one file
/// are two items to it. The second and later of each such file are taken
/// out, to be linked to the first's copy after the jobs.
pub fn hard_link_twins(items: Vec<Planned>) -> (Vec<Planned>, Vec<(Item, Item)>) {
    let mut first: HashMap<(u64, u64), Item> = HashMap::new();
    let (mut kept, mut twins) = (Vec::new(), Vec::new());
    for (item, policy) in items {
        let meta = fs::metadata(&item.source).ok().filter(|m| m.is_file());
        let Some(meta) = meta else {
            kept.push((item, policy));
            continue;
        };
        match first.get(&(meta.dev(), meta.ino())) {
            Some(earlier) => twins.push((earlier.clone(), item)),
            None => {
                first.insert((meta.dev(), meta.ino()), item.clone());
                kept.push((item, policy));
            }
        }
    }
    (kept, twins)
}

/// Makes `twin`'s target a hard link to `first`'s copy.
pub fn link_twin(front: &mut Front, args: &GnuArgs, first: &Item, twin: &Item) {
    if fs::symlink_metadata(&twin.target).is_ok_and(|m| !m.is_dir()) {
        let _ = fs::remove_file(&twin.target);
    }
    match fs::hard_link(&first.target, &twin.target) {
        Ok(()) if args.verbose => println!(
            "{} -> {}",
            quote(&twin.shown_source),
            quote(&twin.shown_target)
        ),
        Ok(()) => {}
        Err(err) => front.error(format!(
            "cannot create hard link {} to {}: {}",
            quote(&twin.shown_target),
            quote(&first.shown_target),
            why(&err)
        )),
    }
}

/// cp -l and cp -s: the link made here, as the user.
pub fn link_here(
    front: &mut Front,
    args: &GnuArgs,
    source: &Path,
    shown_source: &Path,
    target: &Path,
    exists: bool,
    note: &str,
) {
    if exists && (args.force || args.remove_destination) && !target.is_dir() {
        let _ = fs::remove_file(target);
    }
    if args.symbolic_link {
        if let Err(err) = std::os::unix::fs::symlink(source, target) {
            return front.error(format!(
                "cannot create symbolic link {} to {}: {}",
                quote(target),
                quote(shown_source),
                why(&err)
            ));
        }
    } else if !source.is_dir() {
        if let Err(err) = fs::hard_link(source, target) {
            return front.error(format!(
                "cannot create hard link {} to {}: {}",
                quote(target),
                quote(shown_source),
                why(&err)
            ));
        }
    } else {
        let mut errors = Vec::new();
        local::hard_link_tree(source, target, &mut |e| errors.push(e));
        for error in errors {
            front.error(error);
        }
    }
    if args.verbose {
        println!("{} -> {}{note}", quote(shown_source), quote(target));
    }
}
