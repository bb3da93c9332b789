//! What a caller asks for, and its resolution into work items.
//!
//! [`resolve`] checks a request the way `cp` would before touching anything:
//! sources exist, directories need `recursive`, a destination is not inside
//! its source, targets do not collide. It creates nothing, so a request it
//! refuses leaves the file system as it was.

use std::collections::{HashMap, HashSet};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{EngineError, ErrorKind, Result};
use crate::names;
use crate::walk::{self, EntryKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Copy,
    Move,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Copy => "copy",
            Operation::Move => "move",
        }
    }
}

pub use crate::conflict::Conflict;

pub use crate::metadata::Preserve;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub recursive: bool,
    pub on_conflict: Conflict,
    /// "auto" or the name of one engine.
    pub engine: String,
    pub preserve: Preserve,
    /// Bytes per second for this job; 0 for no limit.
    pub rate_limit: u64,
    /// Copy only a file's data extents and leave its holes holes.
    pub sparse: bool,
    /// Threads copying a tree's files at once; 0 for one per CPU.
    pub workers: usize,
    /// Make the copy power-loss durable before it counts as done (fdatasync
    /// or syncfs, then fsync of the target's directory). Without it the copy
    /// is still built under a temporary name and renamed into place whole,
    /// but may sit in the page cache only, as after `cp`. A move always syncs.
    pub sync: bool,
    /// Names rewritten on the way (`rename`, `rename-dirs`).
    pub rename: Option<crate::names::Rename>,
    /// How each copy is checked before it gets its final name (`verify`).
    pub verify: crate::verify::Verify,
    /// What a file that cannot be copied does to the job (`on-error`).
    pub on_error: OnError,
    /// A copy that replaces a file (on-conflict overwrite, update) takes
    /// that file's mode and owner, as cp without -p leaves them.
    pub keep_replaced_attributes: bool,
}

/// What a file that cannot be copied does to the job: the `on-error`
/// option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// As cp and rsync: the file is listed in FailedFiles, the job goes on
    /// and ends failed.
    #[default]
    Continue,
    /// The job ends at the first file that fails.
    Stop,
}

impl OnError {
    pub const NAMES: [(OnError, &'static str); 2] =
        [(OnError::Continue, "continue"), (OnError::Stop, "stop")];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(policy, _)| *policy == self)
            .map(|(_, name)| *name)
            .expect("every policy has a name")
    }

    pub fn from_name(name: &str) -> Option<OnError> {
        Self::NAMES
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(policy, _)| *policy)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            recursive: false,
            on_conflict: Conflict::Fail,
            engine: "auto".into(),
            preserve: Preserve::default(),
            rate_limit: 0,
            sparse: true,
            workers: 0,
            sync: true,
            rename: None,
            verify: crate::verify::Verify::None,
            on_error: OnError::Continue,
            keep_replaced_attributes: false,
        }
    }
}

impl Options {
    /// Refuses options that make no sense for `operation`.
    pub fn check_for(&self, operation: Operation) -> Result<()> {
        if operation == Operation::Move && !self.sync {
            return Err(EngineError::invalid(
                "a move always makes its copy durable before deleting its source",
            ));
        }
        self.check_verify()
    }

    /// Refuses a digest with an engine that never has the bytes in user
    /// space (splice, copy_file_range): it could not take one. (A clone
    /// can: the source is read once, and the copy shares its extents.)
    pub fn check_verify(&self) -> Result<()> {
        let engine = crate::engines::EngineId::from_name(&self.engine);
        match engine.map(|id| id.capabilities()) {
            Some(can) if self.verify.digests() && !can.bytes_in_user_space && !can.shares_extents => {
                Err(EngineError::invalid(format!(
                    "engine {} never has the bytes in user space, so it cannot verify by {}: use auto, io_uring, standard or reflink",
                    self.engine,
                    self.verify.name()
                )))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub operation: Operation,
    pub sources: Vec<PathBuf>,
    pub destination: PathBuf,
    pub options: Options,
}

/// One source and the final path it gets.
#[derive(Debug, Clone)]
pub struct Item {
    pub source: PathBuf,
    pub target: PathBuf,
    pub kind: EntryKind,
    /// The target exists and on-conflict is skip: nothing to do.
    pub skip: bool,
    /// The target exists and on-conflict is overwrite: replace it.
    pub replace: bool,
    /// The target exists and the policy is judged per entry, into what
    /// stands there (a directory merged, a file updated, backed up or kept
    /// beside): see `transfer::merge`.
    pub merge: bool,
}

/// A checked request.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub request: Request,
    pub items: Vec<Item>,
}

fn require_absolute(path: &Path, what: &str) -> Result<()> {
    if !path.is_absolute() {
        return Err(EngineError::invalid(format!(
            "{what} {} is not an absolute path",
            path.display()
        )));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(EngineError::invalid(format!(
            "{what} {} contains . or .. components",
            path.display()
        )));
    }
    Ok(())
}

/// Whether `path` as written can only name a directory: it ends in `/` or
/// `/.`. `Path` drops both when it splits a path into components, so
/// `/backup/` would otherwise become a file named `backup`.
fn names_a_directory(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    bytes.ends_with(b"/") || bytes.ends_with(b"/.")
}

/// The error for a destination written as a directory that is none: like
/// cp's "cannot create regular file 'DIR/': Not a directory", and typed by
/// what stands there (nothing, or something else).
fn not_a_directory(destination: &Path) -> EngineError {
    match fs::metadata(destination) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => EngineError::new(
            ErrorKind::NotFound,
            format!(
                "the destination {} names a directory, and there is none",
                destination.display()
            ),
        ),
        _ => EngineError::invalid(format!(
            "the destination {} names a directory, and is not one",
            destination.display()
        )),
    }
}

fn lstat(path: &Path) -> Result<Metadata> {
    fs::symlink_metadata(path).map_err(|err| EngineError::io("find", path, &err))
}

fn kind_of(meta: &Metadata) -> EntryKind {
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        EntryKind::Symlink
    } else if file_type.is_dir() {
        EntryKind::Directory
    } else if file_type.is_file() {
        EntryKind::File
    } else {
        EntryKind::Special
    }
}

/// Where paths really are, each directory worked out once: a request's
/// sources mostly share one parent (`copy *.jpg dir/`), and the real path
/// of a directory costs a readlink per component of it.
#[derive(Debug, Default)]
pub struct RealLocations(HashMap<PathBuf, PathBuf>);

impl RealLocations {
    /// The real path of `path`'s parent joined with its name (the name is
    /// not followed): where it would be, whether or not it exists yet.
    pub fn of(&mut self, path: &Path) -> Result<PathBuf> {
        let parent = path.parent().unwrap_or(Path::new("/"));
        let real_parent = match self.0.get(parent) {
            Some(real) => real.clone(),
            None => {
                let real = fs::canonicalize(parent)
                    .map_err(|err| EngineError::io("find directory", parent, &err))?;
                self.0.insert(parent.to_path_buf(), real.clone());
                real
            }
        };
        Ok(match path.file_name() {
            Some(name) => real_parent.join(name),
            None => real_parent,
        })
    }
}

/// Checks `request` and works out what goes where. Touches nothing.
pub fn resolve(request: Request) -> Result<Resolved> {
    request.options.check_for(request.operation)?;
    if request.sources.is_empty() {
        return Err(EngineError::invalid("no sources given"));
    }
    for source in &request.sources {
        require_absolute(source, "source")?;
    }
    require_absolute(&request.destination, "destination")?;

    let destination = &request.destination;
    // Like cp, an existing directory (or a symlink to one) is copied into.
    let into_directory = fs::metadata(destination).is_ok_and(|m| m.is_dir());
    if !into_directory && names_a_directory(destination) {
        return Err(not_a_directory(destination));
    }
    if request.sources.len() > 1 && !into_directory {
        return Err(EngineError::invalid(format!(
            "with several sources, the destination {} must be an existing directory",
            destination.display()
        )));
    }

    let mut items = Vec::with_capacity(request.sources.len());
    let mut targets = HashSet::new();
    // Sources a rename rule gives unusable or shared names: listed together.
    let mut offenders = Vec::new();
    let mut real = RealLocations::default();
    for source in &request.sources {
        let meta = lstat(source)?;
        let kind = kind_of(&meta);
        // Like mv, a move takes directories whole without being asked.
        if kind == EntryKind::Directory
            && !request.options.recursive
            && request.operation == Operation::Copy
        {
            return Err(EngineError::invalid(format!(
                "{} is a directory: copying it needs the recursive option",
                source.display()
            )));
        }
        let target = if into_directory {
            let name = source.file_name().ok_or_else(|| {
                EngineError::invalid(format!(
                    "{} has no name to copy into a directory",
                    source.display()
                ))
            })?;
            match &request.options.rename {
                Some(rule) => {
                    let renamed = rule.name_for(kind, name);
                    if let Some(why) = names::unusable(&renamed) {
                        offenders.push(format!("{} → {renamed:?} {why}", source.display()));
                        continue;
                    }
                    destination.join(renamed)
                }
                None => destination.join(name),
            }
        } else {
            destination.clone()
        };
        // Copied into the destination, the target's directory is the
        // destination, seen above to be one.
        if !into_directory {
            let parent = target.parent().unwrap_or(Path::new("/"));
            match fs::metadata(parent) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(EngineError::invalid(format!(
                        "{} is not a directory",
                        parent.display()
                    )))
                }
                Err(err) => {
                    return Err(EngineError::io("find destination directory", parent, &err))
                }
            }
        }

        let real_source = real.of(source)?;
        let real_target = real.of(&target)?;
        if real_target == real_source {
            return Err(EngineError::invalid(format!(
                "{} and {} are the same file",
                source.display(),
                target.display()
            )));
        }
        if kind == EntryKind::Directory && real_target.starts_with(&real_source) {
            return Err(EngineError::invalid(format!(
                "cannot {} {} into itself ({})",
                request.operation.name(),
                source.display(),
                target.display()
            )));
        }
        if !targets.insert(real_target.clone()) {
            if request.options.rename.is_some() {
                offenders.push(format!("{} → {} again", source.display(), target.display()));
                continue;
            }
            return Err(EngineError::invalid(format!(
                "two sources would both become {}",
                target.display()
            )));
        }

        let (mut skip, mut replace, mut merge) = (false, false, false);
        if let Ok(existing) = fs::symlink_metadata(&target) {
            let policy = request.options.on_conflict;
            let into_existing_directory = existing.is_dir() && kind == EntryKind::Directory;
            if into_existing_directory && real_source.starts_with(&real_target) {
                // Copying into a directory that contains the source would
                // copy the copy again.
                return Err(EngineError::invalid(format!(
                    "{} contains the source {}",
                    target.display(),
                    source.display()
                )));
            }
            match policy {
                Conflict::Fail => {
                    return Err(EngineError::new(
                        ErrorKind::AlreadyExists,
                        format!("{} already exists", target.display()),
                    ))
                }
                // A directory over a directory: merged, file by file.
                _ if into_existing_directory => merge = true,
                Conflict::Skip => skip = true,
                Conflict::Overwrite if !existing.is_dir() => replace = true,
                // Judged at placement, against what stands there then.
                _ => merge = true,
            }
        }
        items.push(Item {
            source: source.clone(),
            target,
            kind,
            skip,
            replace,
            merge,
        });
    }
    if let Some(rule) = &request.options.rename {
        names::refuse(&rule.expression, offenders)?;
    }
    Ok(Resolved { request, items })
}

/// The dry run's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanReport {
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub bytes: u64,
    pub targets: Vec<PathBuf>,
    pub conflicts: Vec<PathBuf>,
    /// With a rename rule: each source path whose copy gets another name,
    /// and that copy's path.
    pub renamed: Vec<(PathBuf, PathBuf)>,
    /// Entries whose target is free: made anew.
    pub create: u64,
    /// Taken targets by what on-conflict will do with them (the names of
    /// `ConflictDecision`, and "merged" for a directory entered, "asked"
    /// for ask, "refused" for fail).
    pub decisions: std::collections::BTreeMap<&'static str, u64>,
    /// Each taken target and its decision.
    pub decided: Vec<(PathBuf, &'static str)>,
    /// Seconds the copy takes at the job's rate limit (0 without one).
    pub estimated_seconds: u64,
    /// Bytes of files whose copy stays on their file system, which the
    /// kernel can copy (copy_file_range) or share (reflink) without them
    /// passing through copyd's memory; and the bytes that must.
    pub offloaded_bytes: u64,
    pub memory_bytes: u64,
    /// Bytes of holes in sparse files (copied as holes with `sparse`).
    pub hole_bytes: u64,
    /// Per destination file system (named by the first target directory
    /// on it): free bytes, and bytes the copy needs there.
    pub space: Vec<(PathBuf, u64, u64)>,
    /// What the caller could not do (read a source, write a target's
    /// directory): at most PLAN_PROBLEMS of them, with why.
    pub problems: Vec<(PathBuf, String)>,
    pub destination_free_bytes: u64,
}

impl PlanReport {
    pub fn fits(&self) -> bool {
        self.bytes <= self.destination_free_bytes
    }
}

/// Resolves `request` and walks its sources without changing anything. With
/// on-conflict fail, conflicts are reported rather than refused.
pub fn plan(mut request: Request) -> Result<PlanReport> {
    let on_conflict = request.options.on_conflict;
    if on_conflict == Conflict::Fail {
        request.options.on_conflict = Conflict::Skip;
    }
    let resolved = resolve(request)?;
    let mut report = PlanReport::default();
    for item in &resolved.items {
        report.targets.push(item.target.clone());
        if item.skip || item.replace || item.merge {
            report.conflicts.push(item.target.clone());
        }
        if item.skip && on_conflict == Conflict::Skip {
            continue;
        }
        let mut tree = walk::walk(&item.source, &crate::Control::default())?;
        let rename = resolved.request.options.rename.as_ref();
        names::name_entries(&mut tree, &item.source, rename)?;
        if rename.is_some() {
            for entry in &tree.entries {
                let (source, copy) = match entry.relative.as_os_str().is_empty() {
                    true => (item.source.clone(), item.target.clone()),
                    false => (
                        item.source.join(&entry.relative),
                        item.target.join(entry.copy_relative()),
                    ),
                };
                if source.file_name() != copy.file_name() {
                    report.renamed.push((source, copy));
                }
            }
        }
        plan_decisions(&mut report, item, &tree, on_conflict);
        plan_bytes_and_access(&mut report, item, &tree)?;
        report.files += tree.files;
        report.directories += tree.directories;
        report.symlinks += tree.symlinks;
        report.specials += tree.specials;
        report.bytes += tree.bytes;
    }
    let parent = resolved.items[0]
        .target
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let vfs = rustix::fs::statvfs(&parent)
        .map_err(|errno| EngineError::io("inspect", &parent, &errno.into()))?;
    report.destination_free_bytes = vfs.f_bavail.saturating_mul(vfs.f_frsize);
    for (dir, free, _) in &mut report.space {
        let vfs = rustix::fs::statvfs(&*dir)
            .map_err(|errno| EngineError::io("inspect", dir, &errno.into()))?;
        *free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
    }
    let rate = resolved.request.options.rate_limit;
    if rate > 0 {
        report.estimated_seconds = report.bytes.div_ceil(rate);
    }
    Ok(report)
}

/// At most how many problems a plan lists.
const PLAN_PROBLEMS: usize = 100;

/// Where `item`'s bytes go (kept on their file system or through memory),
/// how much of them is holes, how much each destination file system
/// needs, and what the caller (whose identity the plan runs with) could
/// not read or write.
fn plan_bytes_and_access(report: &mut PlanReport, item: &Item, tree: &walk::Tree) -> Result<()> {
    use rustix::fs::{Access, AtFlags};
    let can = |path: &Path, access: Access| {
        // EACCESS: the effective (acting) ids, not the real ones.
        rustix::fs::accessat(rustix::fs::CWD, path, access, AtFlags::EACCESS)
    };
    let problem = |report: &mut PlanReport, path: PathBuf, why: String| {
        if report.problems.len() < PLAN_PROBLEMS {
            report.problems.push((path, why));
        }
    };
    let target_dir = item.target.parent().unwrap_or(Path::new("/"));
    let target_device = fs::metadata(target_dir)
        .map_err(|err| EngineError::io("inspect", target_dir, &err))?
        .dev();
    if let Err(errno) = can(target_dir, Access::WRITE_OK | Access::EXEC_OK) {
        problem(
            report,
            target_dir.to_path_buf(),
            format!("cannot write in it: {errno}"),
        );
    }
    let mut needed = 0;
    for entry in &tree.entries {
        let source = match entry.relative.as_os_str().is_empty() {
            true => item.source.clone(),
            false => item.source.join(&entry.relative),
        };
        match entry.kind {
            EntryKind::File => {
                let len = entry.metadata.len();
                let allocated = entry.metadata.blocks().saturating_mul(512);
                report.hole_bytes += len.saturating_sub(allocated);
                match entry.metadata.dev() == target_device {
                    true => report.offloaded_bytes += len,
                    false => report.memory_bytes += len,
                }
                // As `fits` counts: every byte, holes too (the upper bound).
                needed += len;
                if let Err(errno) = can(&source, Access::READ_OK) {
                    problem(report, source, format!("cannot read it: {errno}"));
                }
            }
            EntryKind::Directory => {
                if let Err(errno) = can(&source, Access::READ_OK | Access::EXEC_OK) {
                    problem(report, source, format!("cannot list it: {errno}"));
                }
            }
            EntryKind::Symlink | EntryKind::Special => {}
        }
    }
    match report
        .space
        .iter_mut()
        .find(|(dir, _, _)| fs::metadata(dir).is_ok_and(|m| m.dev() == target_device))
    {
        Some((_, _, on_it)) => *on_it += needed,
        None => report.space.push((target_dir.to_path_buf(), 0, needed)),
    }
    Ok(())
}

/// What each entry of `item` (walked as `tree`) will meet at its target,
/// and what `policy` will do there: the merge's own rule
/// ([`Conflict::decide`]), asked of what stands there now.
fn plan_decisions(report: &mut PlanReport, item: &Item, tree: &walk::Tree, policy: Conflict) {
    let mut note = |target: PathBuf, decision: &'static str| {
        *report.decisions.entry(decision).or_default() += 1;
        report.decided.push((target, decision));
    };
    if policy == Conflict::Fail && (item.skip || item.merge) {
        note(item.target.clone(), "refused");
        return;
    }
    if item.skip {
        note(item.target.clone(), "skipped");
        return;
    }
    if item.replace {
        note(item.target.clone(), "overwritten");
        return;
    }
    for entry in &tree.entries {
        let target = match entry.relative.as_os_str().is_empty() {
            true => item.target.clone(),
            false => item.target.join(entry.copy_relative()),
        };
        let existing = match fs::symlink_metadata(&target) {
            Ok(existing) if item.merge => existing,
            _ => {
                report.create += 1;
                continue;
            }
        };
        let decision = match (entry.kind, existing.is_dir()) {
            (EntryKind::Directory, true) => "merged",
            _ => policy
                .decide(&entry.metadata, &existing)
                .map_or("asked", |decision| decision.name()),
        };
        note(target, decision);
    }
}
