//! Sparse files keep their holes: only data extents are copied, the copy
//! uses about the source's disk space, and progress still reaches the total.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{copy, du_kib, output, pattern, ScratchMount};
use copyd_engine::{EngineSet, Preserve};

const GIB: u64 = 1 << 30;

/// A 1 GiB file with three small data regions, the last well before the
/// end (so it ends in a hole).
fn make_sparse(path: &Path) {
    let file = File::create(path).unwrap();
    file.write_all_at(&pattern(100_000, 1), 0).unwrap();
    file.write_all_at(&pattern(300_000, 2), 400 << 20).unwrap();
    file.write_all_at(&pattern(5_000, 3), 900 << 20).unwrap();
    file.set_len(GIB).unwrap();
    file.sync_all().unwrap();
}

fn same_content(a: &Path, b: &Path) {
    // cmp reads both in big blocks; faster than comparing in the test.
    output("cmp", &[a.as_os_str(), b.as_os_str()]);
}

/// With every engine that moves bytes (and auto), in `dir`.
fn sparse_copies_in(dir: &Path, engines: &[&str]) {
    let source = dir.join("sparse");
    make_sparse(&source);
    let source_du = du_kib(&source);
    assert!(
        source_du < 2048,
        "the source should be sparse, uses {source_du} KiB"
    );
    for engine in engines {
        let target = dir.join(format!("copy-{engine}"));
        let copied = copy(&source, &target, engine, Preserve::default()).unwrap();
        assert_eq!(
            fs::metadata(&target).unwrap().len(),
            GIB,
            "{engine}: trailing hole lost"
        );
        let target_du = du_kib(&target);
        // Same data blocks, give or take file system rounding.
        assert!(
            target_du <= source_du + 256,
            "{engine}: copy uses {target_du} KiB, source {source_du} KiB"
        );
        let snap = copied.progress.snapshot();
        assert_eq!((snap.bytes_done, snap.bytes_total), (GIB, GIB), "{engine}");
        same_content(&source, &target);
        fs::remove_file(&target).unwrap();
    }
}

fn byte_movers_and_auto() -> Vec<&'static str> {
    let mut engines: Vec<&str> = EngineSet::probe()
        .names()
        .into_iter()
        .filter(|n| *n != "reflink")
        .collect();
    engines.push("auto");
    engines
}

#[test]
fn a_sparse_gigabyte_on_ext4() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    sparse_copies_in(dir.path(), &byte_movers_and_auto());
}

#[test]
fn a_sparse_gigabyte_on_tmpfs() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    sparse_copies_in(dir.path(), &byte_movers_and_auto());
}

#[test]
fn a_sparse_gigabyte_on_btrfs_by_reflink_too() {
    let Some(mount) = ScratchMount::loop_fs("btrfs", 256) else {
        return;
    };
    let mut engines = byte_movers_and_auto();
    engines.push("reflink");
    sparse_copies_in(&mount.path, &engines);
}

/// ext4 → tmpfs: across file systems, extent by extent.
#[test]
fn a_sparse_gigabyte_across_file_systems() {
    let src = tempfile::tempdir_in("/tmp").unwrap();
    let dst = tempfile::tempdir_in("/dev/shm").unwrap();
    let source = src.path().join("sparse");
    make_sparse(&source);
    let target = dst.path().join("copy");
    let copied = copy(&source, &target, "auto", Preserve::default()).unwrap();
    assert!(du_kib(&target) <= du_kib(&source) + 256);
    assert_eq!(copied.progress.snapshot().bytes_done, GIB);
    same_content(&source, &target);
}

#[test]
fn a_file_of_only_holes_costs_nothing() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("holes");
    File::create(&source).unwrap().set_len(64 * GIB).unwrap();
    let target = dir.path().join("copy");
    let start = std::time::Instant::now();
    let copied = copy(&source, &target, "auto", Preserve::default()).unwrap();
    assert!(start.elapsed().as_secs() < 2, "took {:?}", start.elapsed());
    assert!(
        copied.engine_bytes.is_empty(),
        "no engine should move a byte: {:?}",
        copied.engine_bytes
    );
    assert_eq!(copied.progress.snapshot().bytes_done, 64 * GIB);
    assert_eq!(fs::metadata(&target).unwrap().len(), 64 * GIB);
    assert_eq!(du_kib(&target), 0);
}

#[test]
fn without_sparse_holes_are_written_out() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("sparse");
    let file = File::create(&source).unwrap();
    file.write_all_at(b"x", 8 << 20).unwrap();
    let target = dir.path().join("copy");
    let options = copyd_engine::Options {
        engine: "standard".into(),
        sparse: false,
        ..Default::default()
    };
    let copied = common::copy_with(&source, &target, options, &EngineSet::probe()).unwrap();
    assert_eq!(copied.engine_bytes.get("standard"), Some(&((8 << 20) + 1)));
    assert!(du_kib(&target) >= 8 << 10);
    same_content(&source, &target);
}
