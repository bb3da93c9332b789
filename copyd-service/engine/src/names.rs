//! Destination names: where each walked entry lands. The one owner of the
//! rule "a file's path in the copy"; every phase (the build, the hard-link
//! table, small-file batches, the security check, the plan) asks the entry
//! for its [`Entry::copy_relative`] path instead of assuming it equals the
//! source's.
//!
//! Without a rename rule the two are the same and nothing is stored. With
//! one (`rename`, sed's `s/REGEX/REPLACEMENT/FLAGS`), each file's name, and
//! with `rename-dirs` each directory's, is rewritten once, right after the
//! walk ([`name_entries`]), and a result that cannot be a file name, or two
//! entries of one directory landing on one name, refuse the request before
//! anything is written.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::walk::{Entry, EntryKind, Tree};

/// At most how many offending names an error lists.
const LISTED: usize = 10;

/// A sed-style substitution applied to names.
#[derive(Debug, Clone)]
pub struct Rename {
    /// As the caller wrote it (kept in checkpoints, shown by Plan).
    pub expression: String,
    /// Rename directories too (`rename-dirs`), not only files.
    pub directories: bool,
    regex: regex::bytes::Regex,
    replacement: Vec<u8>,
    global: bool,
}

/// Two rules are the same if written the same (the regex follows).
impl PartialEq for Rename {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.directories == other.directories
    }
}

impl Eq for Rename {}

impl Rename {
    /// Parses `s/REGEX/REPLACEMENT/FLAGS` (any delimiter, as sed allows:
    /// `s|a|b|`). Flags: `g` (every match, not the first) and `i` (ignore
    /// case). In the replacement, `$1`, `${name}` and sed's `\1` name
    /// captures; `\` before the delimiter or another `\` stands for it.
    pub fn parse(expression: &str, directories: bool) -> Result<Rename> {
        let invalid = |why: &str| {
            EngineError::invalid(format!(
                "option rename: {expression:?} {why} (expected s/REGEX/REPLACEMENT/FLAGS)"
            ))
        };
        let mut chars = expression.chars();
        if chars.next() != Some('s') {
            return Err(invalid("does not start with s"));
        }
        let delimiter = chars
            .next()
            .filter(|d| !d.is_alphanumeric() && *d != '\\' && *d != '\n')
            .ok_or_else(|| invalid("has no delimiter after s"))?;
        let parts = split_unescaped(chars.as_str(), delimiter);
        let [pattern, replacement, flags] = &parts[..] else {
            return Err(invalid("does not have three parts"));
        };
        if pattern.is_empty() {
            return Err(invalid("has an empty pattern"));
        }
        let (mut global, mut ignore_case) = (false, false);
        for flag in flags.chars() {
            match flag {
                'g' => global = true,
                'i' => ignore_case = true,
                other => return Err(invalid(&format!("has an unknown flag {other:?}"))),
            }
        }
        let regex = regex::bytes::RegexBuilder::new(pattern)
            .case_insensitive(ignore_case)
            .build()
            .map_err(|err| invalid(&format!("has an invalid regex: {err}")))?;
        Ok(Rename {
            expression: expression.to_owned(),
            directories,
            regex,
            replacement: sed_replacement(replacement),
            global,
        })
    }

    /// `name` with the substitution made.
    pub fn apply(&self, name: &OsStr) -> OsString {
        let bytes = name.as_bytes();
        let renamed = match self.global {
            true => self.regex.replace_all(bytes, self.replacement.as_slice()),
            false => self.regex.replace(bytes, self.replacement.as_slice()),
        };
        OsString::from_vec(renamed.into_owned())
    }

    /// The name an entry of `kind` called `name` gets in the copy.
    pub fn name_for(&self, kind: EntryKind, name: &OsStr) -> OsString {
        if kind == EntryKind::Directory && !self.directories {
            return name.to_owned();
        }
        self.apply(name)
    }
}

/// Splits `text` at each `delimiter` not preceded by a backslash; an
/// escaped delimiter becomes the delimiter itself. (Other escapes are kept
/// for the regex and the replacement to read.)
fn split_unescaped(text: &str, delimiter: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&delimiter) => {
                parts.last_mut().unwrap().push(delimiter);
                chars.next();
            }
            '\\' => {
                let part = parts.last_mut().unwrap();
                part.push('\\');
                if let Some(next) = chars.next() {
                    part.push(next);
                }
            }
            c if c == delimiter => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

/// A sed replacement in the regex crate's syntax: `\N` becomes `${N}`,
/// `\\` a backslash.
fn sed_replacement(replacement: &str) -> Vec<u8> {
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('\\', Some(digit)) if digit.is_ascii_digit() => {
                out.push_str(&format!("${{{digit}}}"));
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            (c, _) => out.push(c),
        }
    }
    out.into_bytes()
}

/// Why `name` cannot be a file name, if it cannot.
pub fn unusable(name: &OsStr) -> Option<&'static str> {
    let bytes = name.as_bytes();
    match bytes {
        [] => Some("is empty"),
        b"." | b".." => Some("is . or .."),
        _ if bytes.contains(&b'/') => Some("contains /"),
        _ if bytes.contains(&0) => Some("contains NUL"),
        _ => None,
    }
}

/// Gives every entry of `tree` (walked from `source`) its path in the
/// copy, under `rename`. Refuses, naming up to ten offenders, a name the
/// rule makes unusable or two entries of one directory that land on one
/// name. The root entry keeps its name: the item's target names it.
pub fn name_entries(tree: &mut Tree, source: &Path, rename: Option<&Rename>) -> Result<()> {
    let Some(rename) = rename else {
        return Ok(());
    };
    // Source directory → its copy's path, for the entries below it.
    let mut directories: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut taken: HashSet<PathBuf> = HashSet::new();
    let mut offenders = Vec::new();
    for entry in &mut tree.entries {
        if entry.relative.as_os_str().is_empty() {
            continue;
        }
        let parent = Path::new(entry.directory());
        let copy_parent = directories
            .get(parent)
            .cloned()
            .unwrap_or_else(|| parent.to_path_buf());
        let name = entry.relative.file_name().unwrap_or_default();
        let renamed = rename.name_for(entry.kind, name);
        if let Some(why) = unusable(&renamed) {
            offenders.push(format!(
                "{} → {:?} {why}",
                source.join(&entry.relative).display(),
                renamed
            ));
            continue;
        }
        let copy = copy_parent.join(&renamed);
        if !taken.insert(copy.clone()) {
            offenders.push(format!(
                "{} → {} again",
                source.join(&entry.relative).display(),
                copy.display()
            ));
        }
        if entry.kind == EntryKind::Directory {
            directories.insert(entry.relative.clone(), copy.clone());
        }
        entry.target = (copy != entry.relative).then_some(copy);
    }
    refuse(&rename.expression, offenders)
}

/// InvalidArgument listing the first offenders, if there are any.
pub fn refuse(expression: &str, offenders: Vec<String>) -> Result<()> {
    if offenders.is_empty() {
        return Ok(());
    }
    let more = offenders.len().saturating_sub(LISTED);
    let mut message = format!(
        "option rename {expression:?} gives names that cannot be used: {}",
        offenders[..offenders.len().min(LISTED)].join("; ")
    );
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    Err(EngineError::invalid(message))
}

impl Entry {
    /// The entry's path relative to its item's copy: its source-relative
    /// path unless a rename rule changed a name on the way.
    pub fn copy_relative(&self) -> &Path {
        self.target.as_deref().unwrap_or(&self.relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn renamed(expression: &str, name: &str) -> String {
        let rule = Rename::parse(expression, false).unwrap();
        rule.apply(OsStr::new(name)).into_string().unwrap()
    }

    #[test]
    fn sed_expressions_rename_as_sed_would() {
        assert_eq!(renamed(r"s/\.txt$/.bak/", "a.txt"), "a.bak");
        assert_eq!(renamed("s/a/b/", "aaa"), "baa");
        assert_eq!(renamed("s/a/b/g", "aaa"), "bbb");
        assert_eq!(renamed("s/A/b/gi", "aAa"), "bbb");
        assert_eq!(renamed(r"s|(\w+)-(\d+)|$2-$1|", "x-12"), "12-x");
        assert_eq!(renamed(r"s/(\w+)-(\d+)/\2_\1/", "x-12"), "12_x");
        assert_eq!(renamed(r"s/(?P<n>\d+)/<${n}>/", "f7"), "f<7>");
        assert_eq!(renamed(r"s/\//_/", "a"), "a");
        assert_eq!(renamed(r"s,\,,;,g", "a,b,c"), "a;b;c");
    }

    #[test]
    fn bad_expressions_are_refused_naming_the_option() {
        for bad in [
            "", "x/a/b/", "s", "s/a/b", "s/a/b/q", "s//b/", "s/(/b/", "sa/b/c",
        ] {
            let err = Rename::parse(bad, false).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::InvalidArgument, "{bad:?}");
            assert!(err.message.starts_with("option rename"), "{}", err.message);
        }
    }

    #[test]
    fn unusable_names_are_named() {
        for (name, bad) in [
            ("", true),
            (".", true),
            ("..", true),
            ("a/b", true),
            ("a", false),
        ] {
            assert_eq!(unusable(OsStr::new(name)).is_some(), bad, "{name:?}");
        }
    }
}
