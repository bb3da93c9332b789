//! Reading ahead: under `auto`, a cached file of 8–256 MiB of data goes by
//! read and write on two threads (counted as the standard engine) where
//! the chosen engine would move its bytes through the page cache anyway.
//! The copy must be the same as any other: same bytes, holes kept, and a
//! cancel leaves nothing behind.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use copyd_engine::{
    resolve, run, Control, EngineSet, ErrorKind, Operation, Options, Preserve, Progress, Request,
};

const MIB: u64 = 1 << 20;

fn auto(source: &Path, target: &Path) -> common::Copied {
    common::copy(source, target, "auto", Preserve::default()).unwrap()
}

#[test]
fn a_cached_file_of_tens_of_mib_is_read_ahead_to_ext4_and_to_tmpfs() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("source");
    // Just written, so cached.
    let data = common::write_file(&source, (24 * MIB) as usize, 3);
    let copied = auto(&source, &dir.path().join("copy"));
    assert_eq!(
        copied.engine_bytes.into_iter().collect::<Vec<_>>(),
        [("standard", 24 * MIB)]
    );
    assert!(fs::read(dir.path().join("copy")).unwrap() == data);

    let Some(tmpfs) = common::ScratchMount::small_tmpfs(64 << 10) else {
        return;
    };
    let copied = auto(&source, &tmpfs.path.join("copy"));
    assert_eq!(
        copied.engine_bytes.into_iter().collect::<Vec<_>>(),
        [("standard", 24 * MIB)]
    );
    assert!(fs::read(tmpfs.path.join("copy")).unwrap() == data);
}

#[test]
fn a_sparse_file_read_ahead_keeps_its_holes() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("sparse");
    let file = fs::File::create(&source).unwrap();
    file.set_len(256 * MIB).unwrap();
    // 16 MiB of data: 1 MiB every 16 MiB, the rest holes.
    for i in 0..16 {
        let chunk = common::pattern(MIB as usize, i);
        std::os::unix::fs::FileExt::write_all_at(&file, &chunk, i * 16 * MIB).unwrap();
    }
    drop(file);
    let copy = dir.path().join("copy");
    let copied = auto(&source, &copy);
    assert_eq!(
        copied.engine_bytes.into_iter().collect::<Vec<_>>(),
        [("standard", 16 * MIB)]
    );
    assert!(fs::read(&source).unwrap() == fs::read(&copy).unwrap());
    let (source_kib, copy_kib) = (common::du_kib(&source), common::du_kib(&copy));
    assert!(
        copy_kib <= source_kib + 64,
        "holes filled: du {copy_kib} KiB against {source_kib} KiB"
    );
}

#[test]
fn outside_its_bounds_or_with_an_engine_named_it_is_not_used() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (small, large) = (dir.path().join("small"), dir.path().join("large"));
    common::write_file(&small, (4 * MIB) as usize, 5);
    common::write_file(&large, (24 * MIB) as usize, 6);
    // Under 8 MiB a thread costs more than it saves: the chain decides.
    let copied = auto(&small, &dir.path().join("small-copy"));
    assert!(
        !copied.engine_bytes.contains_key("standard"),
        "{:?}",
        copied.engine_bytes
    );
    // An engine asked for by name is the engine used.
    let named = common::copy(
        &large,
        &dir.path().join("named"),
        "splice",
        Preserve::default(),
    );
    let named = named.unwrap().engine_bytes.into_iter().collect::<Vec<_>>();
    assert_eq!(named, [("splice", 24 * MIB)]);
}

/// Cancelled while the reader is ahead of the writer, the copy stops (the
/// reader thread with it, or this test would hang) and leaves nothing.
#[test]
fn a_cancelled_read_ahead_stops_and_leaves_nothing() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("source");
    common::write_file(&source, (24 * MIB) as usize, 7);
    let dst = dir.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let resolved = resolve(Request {
        operation: Operation::Copy,
        sources: vec![source],
        destination: dst.clone(),
        options: Options {
            // About 3 s of copying.
            rate_limit: 8 * MIB,
            ..Options::default()
        },
    })
    .unwrap();
    let (progress, control) = (Progress::new(), Arc::new(Control::default()));
    let canceller = {
        let control = Arc::clone(&control);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(800));
            control.cancel();
        })
    };
    let result = run(&resolved, &EngineSet::probe(), "5", &progress, &control);
    canceller.join().unwrap();
    assert_eq!(result.unwrap_err().kind, ErrorKind::Cancelled);
    assert!(progress.engine_bytes().contains_key("standard"));
    assert_eq!(fs::read_dir(&dst).unwrap().count(), 0, "something was left");
}
