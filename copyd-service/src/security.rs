//! The rules of the [security] table, applied to each request: path
//! lengths and system locations when the request arrives ([`check_request`]),
//! and, per file, sizes and extensions ([`check_resolved`], which walks the
//! sources as the caller before the job is created).
//!
//! These are policy on top of the kernel's checks of the caller's own
//! rights, not a replacement for them: a file that changes between this
//! check and the copy (grows, is renamed) is the caller's own file, which
//! the caller could copy anyway.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use copyd_engine::{walk, Control, EngineError, EntryKind, RealLocations, Request, Resolved};

use crate::config::SecurityConfig;
use crate::error::Error;

fn refuse(rule: &str, what: impl std::fmt::Display) -> Error {
    Error::PolicyRefused(format!("blocked by security.{rule}: {what}"))
}

fn check_length(rules: &SecurityConfig, path: &Path) -> Result<(), Error> {
    let length = path.as_os_str().len() as u64;
    if rules.max_path_length > 0 && length > rules.max_path_length {
        return Err(refuse(
            "max_path_length",
            format!(
                "a path of {length} bytes is longer than {} ({}…)",
                rules.max_path_length,
                String::from_utf8_lossy(&path.as_os_str().as_bytes()[..64.min(length as usize)])
            ),
        ));
    }
    Ok(())
}

fn is_system(rules: &SecurityConfig, path: &Path) -> Option<PathBuf> {
    rules
        .system_paths
        .iter()
        .find(|system| path.starts_with(system))
        .cloned()
}

fn check_system(rules: &SecurityConfig, path: &Path, privileged: bool) -> Result<(), Error> {
    if !rules.require_privilege_for_system || privileged {
        return Ok(());
    }
    match is_system(rules, path) {
        Some(system) => Err(refuse(
            "system_paths",
            format!(
                "{} is under {} (a privileged job may touch it: require_privilege_for_system)",
                path.display(),
                system.display()
            ),
        )),
        None => Ok(()),
    }
}

/// The checks that need no file system: path lengths, and system paths as
/// written in the request.
pub fn check_request(
    rules: &SecurityConfig,
    request: &Request,
    privileged: bool,
) -> Result<(), Error> {
    for path in request.sources.iter().chain([&request.destination]) {
        check_length(rules, path)?;
        check_system(rules, path, privileged)?;
    }
    Ok(())
}

fn extension(name: &OsStr) -> Option<String> {
    Path::new(name)
        .extension()
        .map(|ext| ext.to_string_lossy().to_lowercase())
}

fn listed(list: &[String], ext: &str) -> bool {
    list.iter()
        .any(|e| e.trim_start_matches('.').eq_ignore_ascii_case(ext))
}

/// Checks one regular file: its size and both its source's and its
/// target's extension (renaming a.exe to a.txt does not slip past).
fn check_file(
    rules: &SecurityConfig,
    source: &Path,
    target: &Path,
    size: u64,
) -> Result<(), Error> {
    check_length(rules, target)?;
    if rules.max_file_size > 0 && size > rules.max_file_size {
        return Err(refuse(
            "max_file_size",
            format!(
                "{} has {size} bytes, more than {}",
                source.display(),
                rules.max_file_size
            ),
        ));
    }
    for path in [source, target] {
        let ext = path.file_name().and_then(extension);
        if let Some(ext) = &ext {
            if listed(&rules.blocked_extensions, ext) {
                return Err(refuse(
                    "blocked_extensions",
                    format!(".{ext} ({})", path.display()),
                ));
            }
        }
        if !rules.allowed_extensions.is_empty()
            && !ext
                .as_deref()
                .is_some_and(|e| listed(&rules.allowed_extensions, e))
        {
            return Err(refuse(
                "allowed_extensions",
                format!(
                    "{} has no allowed extension ({})",
                    path.display(),
                    rules.allowed_extensions.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The checks of every item of a resolved request: system paths where the
/// sources and targets really are, and (if such rules are set) every file's
/// size, extension and target path length, walking directories. Runs with
/// the caller's rights (it reads the caller's files).
pub fn check_resolved(
    rules: &SecurityConfig,
    resolved: &Resolved,
    privileged: bool,
) -> Result<(), Error> {
    let per_file = rules.max_file_size > 0
        || rules.max_path_length > 0
        || !rules.allowed_extensions.is_empty()
        || !rules.blocked_extensions.is_empty();
    let mut real = RealLocations::default();
    for item in &resolved.items {
        // A source whose directory cannot be resolved is judged by its path
        // as written (the copy will fail to find it anyway).
        let real_source = real
            .of(&item.source)
            .unwrap_or_else(|_| item.source.clone());
        check_system(rules, &real_source, privileged)?;
        check_system(rules, &item.target, privileged)?;
        let rename = resolved.request.options.rename.as_ref();
        if !(per_file || rename.is_some()) || item.skip || item.kind == EntryKind::Symlink {
            continue;
        }
        let mut tree = walk::walk(&item.source, &Control::default()).map_err(Error::from)?;
        // Refuses names a rename rule makes unusable, before the job
        // exists; and the rules judge each file by the name it will get.
        copyd_engine::names::name_entries(&mut tree, &item.source, rename).map_err(Error::from)?;
        if !per_file {
            continue;
        }
        for entry in &tree.entries {
            let (source, target) = if entry.relative.as_os_str().is_empty() {
                (item.source.clone(), item.target.clone())
            } else {
                (
                    item.source.join(&entry.relative),
                    item.target.join(entry.copy_relative()),
                )
            };
            if entry.metadata.is_file() {
                check_file(rules, &source, &target, entry.metadata.len())?;
            } else {
                check_length(rules, &target)?;
            }
        }
    }
    Ok(())
}

/// Resolves `request` and checks it: run it as the caller. The outer error
/// is the engine's (a missing source...), the inner one a refusal.
#[allow(clippy::result_large_err)]
pub fn vet(
    rules: &SecurityConfig,
    request: Request,
    privileged: bool,
) -> Result<Result<Resolved, Error>, EngineError> {
    let resolved = copyd_engine::resolve(request)?;
    Ok(check_resolved(rules, &resolved, privileged).map(|()| resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> SecurityConfig {
        SecurityConfig {
            blocked_extensions: vec!["EXE".into()],
            max_file_size: 10,
            max_path_length: 4096,
            ..SecurityConfig::default()
        }
    }

    #[test]
    fn rules_name_themselves() {
        let r = rules();
        let err = check_file(&r, Path::new("/a/x.exe"), Path::new("/b/x"), 1).unwrap_err();
        assert!(
            matches!(&err, Error::PolicyRefused(m) if m.contains("blocked_extensions") && m.contains(".exe")),
            "{err:?}"
        );
        let err = check_file(&r, Path::new("/a/x"), Path::new("/b/y.Exe"), 1).unwrap_err();
        assert!(matches!(err, Error::PolicyRefused(_)));
        let err = check_file(&r, Path::new("/a/x"), Path::new("/b/x"), 11).unwrap_err();
        assert!(matches!(&err, Error::PolicyRefused(m) if m.contains("max_file_size")));
        check_file(&r, Path::new("/a/x.txt"), Path::new("/b/x.txt"), 10).unwrap();
        let allow = SecurityConfig {
            allowed_extensions: vec!["txt".into()],
            ..SecurityConfig::default()
        };
        check_file(&allow, Path::new("/a/x.TXT"), Path::new("/b/x.txt"), 1).unwrap();
        assert!(check_file(&allow, Path::new("/a/x"), Path::new("/b/x"), 1).is_err());
        let long = PathBuf::from(format!("/{}", "a".repeat(5000)));
        assert!(
            matches!(check_length(&r, &long), Err(Error::PolicyRefused(m)) if m.contains("max_path_length"))
        );
        assert!(check_system(&r, Path::new("/proc/self/environ"), false).is_err());
        check_system(&r, Path::new("/proc/self/environ"), true).unwrap();
        check_system(&r, Path::new("/process"), false).unwrap();
    }
}
