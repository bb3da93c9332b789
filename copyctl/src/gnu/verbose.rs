//! `-v`'s lines, as GNU cp and mv print them, from the files copyd reports
//! placed (its FilesPlaced signals, which go to the job's owner only): each
//! line when the file is under its final name, not a listing afterwards.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::quote;
use super::submit::Item;
use crate::watch::PlacedFile;

/// Whose lines: cp's (`'a' -> 'b'`) or mv's (`renamed 'a' -> 'b'`, and
/// across file systems `created directory`, `copied`, `removed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Cp,
    Mv,
}

/// Prints the lines of `files`, placed by a job of `items`, with the names
/// the user wrote.
pub fn print(style: Style, items: &[Item], files: Vec<PlacedFile>) {
    let mut out = String::new();
    for (action, directory, source, target) in files {
        let source = PathBuf::from(OsStr::from_bytes(&source));
        let target = PathBuf::from(OsStr::from_bytes(&target));
        out.push_str(&line(style, items, &action, directory, &source, &target));
        out.push('\n');
    }
    // One write for the batch: a tree's thousand lines are not a thousand
    // writes.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
}

/// The line for one file.
fn line(
    style: Style,
    items: &[Item],
    action: &str,
    directory: bool,
    source: &Path,
    target: &Path,
) -> String {
    if action == "removed" {
        let (shown, _) = shown(
            items,
            source,
            |item| &item.source,
            |item| &item.shown_source,
        );
        return match directory {
            true => format!("removed directory {}", quote(shown)),
            false => format!("removed {}", quote(shown)),
        };
    }
    let (shown_target, item) = shown(
        items,
        target,
        |item| &item.target,
        |item| &item.shown_target,
    );
    let shown_source = match item {
        Some(item) => match source.strip_prefix(&item.source) {
            Ok(relative) => joined(&item.shown_source, relative),
            Err(_) => source.to_path_buf(),
        },
        None => source.to_path_buf(),
    };
    // The note (a backup made) belongs to the operand's own line.
    let note = match item {
        Some(item) if target == item.target => item.note.as_str(),
        _ => "",
    };
    let (from, to) = (quote(shown_source), quote(shown_target));
    match (style, action, directory) {
        (Style::Cp, ..) => format!("{from} -> {to}{note}"),
        (Style::Mv, "renamed", _) => format!("renamed {from} -> {to}{note}"),
        (Style::Mv, _, true) => format!("created directory {to}"),
        (Style::Mv, _, false) => format!("copied {from} -> {to}{note}"),
    }
}

/// `path` as the user named it: the item whose path (`absolute`) holds it
/// most closely, its shown name (`shown_of`) joined with the rest. A path
/// of no item is shown as it is.
fn shown<'i>(
    items: &'i [Item],
    path: &Path,
    absolute: impl Fn(&Item) -> &PathBuf,
    shown_of: impl Fn(&Item) -> &PathBuf,
) -> (PathBuf, Option<&'i Item>) {
    let best = items
        .iter()
        .filter_map(|item| {
            let relative = path.strip_prefix(absolute(item)).ok()?;
            Some((item, relative, absolute(item).components().count()))
        })
        .max_by_key(|(_, _, depth)| *depth);
    match best {
        Some((item, relative, _)) => (joined(shown_of(item), relative), Some(item)),
        None => (path.to_path_buf(), None),
    }
}

/// `root/relative`, or `root` as written when `relative` is empty (a
/// trailing slash the user typed stays).
fn joined(root: &Path, relative: &Path) -> PathBuf {
    match relative.as_os_str().is_empty() {
        true => root.to_path_buf(),
        false => root.join(relative),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gnu::submit::Modes;

    fn item(source: &str, target: &str, shown: (&str, &str), note: &str) -> Item {
        Item {
            source: source.into(),
            target: target.into(),
            shown_source: shown.0.into(),
            shown_target: shown.1.into(),
            joins_directory: false,
            note: note.into(),
            modes: Modes::AsCopied,
        }
    }

    #[test]
    fn lines_use_the_names_the_user_wrote() {
        let items = [item(
            "/w/src",
            "/w/dst/src",
            ("src/", "dst"),
            " (backup: 'x')",
        )];
        let cp = |action, dir, s: &str, t: &str| {
            line(Style::Cp, &items, action, dir, Path::new(s), Path::new(t))
        };
        assert_eq!(
            cp("copied", true, "/w/src", "/w/dst/src"),
            "'src/' -> 'dst' (backup: 'x')"
        );
        assert_eq!(
            cp("copied", false, "/w/src/a/b", "/w/dst/src/a/b"),
            "'src/a/b' -> 'dst/a/b'"
        );
        let mv = |action, dir, s: &str, t: &str| {
            line(Style::Mv, &items, action, dir, Path::new(s), Path::new(t))
        };
        assert_eq!(
            mv("renamed", true, "/w/src", "/w/dst/src"),
            "renamed 'src/' -> 'dst' (backup: 'x')"
        );
        assert_eq!(
            mv("copied", true, "/w/src/a", "/w/dst/src/a"),
            "created directory 'dst/a'"
        );
        assert_eq!(
            mv("copied", false, "/w/src/f", "/w/dst/src/f"),
            "copied 'src/f' -> 'dst/f'"
        );
        assert_eq!(mv("removed", false, "/w/src/f", ""), "removed 'src/f'");
        assert_eq!(
            mv("removed", true, "/w/src", ""),
            "removed directory 'src/'"
        );
    }
}
