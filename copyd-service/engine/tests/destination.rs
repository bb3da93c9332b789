//! A destination written as a directory (`DIR/`, `DIR/.`) must be one, as
//! with cp ("cannot create regular file 'DIR/': Not a directory"): the
//! request is refused with a typed error and nothing is created.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use copyd_engine::{ErrorKind, Options, Preserve};

/// Every name in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `dir` joined with `name` and the bytes `tail` appended as written.
fn written(dir: &Path, name: &str, tail: &str) -> PathBuf {
    PathBuf::from(format!("{}/{name}{tail}", dir.display()))
}

#[test]
fn a_missing_directory_destination_is_not_found_and_nothing_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("big.iso");
    common::write_file(&source, 100_000, 1);
    for tail in ["/", "/."] {
        let destination = written(dir.path(), "backup", tail);
        let err = common::copy(&source, &destination, "auto", Preserve::default())
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", destination.display()));
        assert_eq!(
            err.kind,
            ErrorKind::NotFound,
            "{}: {err}",
            destination.display()
        );
        assert_eq!(
            names_in(dir.path()),
            ["big.iso"],
            "{}",
            destination.display()
        );
    }
    // A missing parent too: `/nowhere/backup/`.
    let deeper = written(&dir.path().join("nowhere"), "backup", "/");
    let err = common::copy(&source, &deeper, "auto", Preserve::default()).err();
    assert_eq!(err.map(|e| e.kind), Some(ErrorKind::NotFound));
    assert_eq!(names_in(dir.path()), ["big.iso"]);
}

#[test]
fn a_file_written_as_a_directory_is_an_invalid_destination_and_stays_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("a");
    common::write_file(&source, 5_000, 2);
    let existing = dir.path().join("old");
    let old = common::write_file(&existing, 3_000, 3);
    for on_conflict in ["fail", "overwrite"] {
        let options = Options {
            on_conflict: copyd_engine::Conflict::parse(on_conflict).unwrap(),
            ..Options::default()
        };
        let destination = written(dir.path(), "old", "/");
        let err = common::copy_with(&source, &destination, options, &Default::default())
            .err()
            .unwrap_or_else(|| panic!("{on_conflict}: accepted"));
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{on_conflict}: {err}");
        assert_eq!(fs::read(&existing).unwrap(), old, "{on_conflict}");
        assert_eq!(names_in(dir.path()), ["a", "old"], "{on_conflict}");
    }
}

#[test]
fn an_existing_directory_written_with_a_slash_is_copied_into() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("a");
    let data = common::write_file(&source, 5_000, 4);
    fs::create_dir(dir.path().join("backup")).unwrap();
    for (tail, name) in [("/", "a"), ("/.", "a")] {
        let destination = written(dir.path(), "backup", tail);
        let _ = fs::remove_file(dir.path().join("backup").join(name));
        common::copy(&source, &destination, "auto", Preserve::default())
            .unwrap_or_else(|err| panic!("{}: {err}", destination.display()));
        assert_eq!(
            fs::read(dir.path().join("backup").join(name)).unwrap(),
            data
        );
        assert_eq!(names_in(&dir.path().join("backup")), [name]);
    }
}
