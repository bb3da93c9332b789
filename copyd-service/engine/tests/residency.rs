//! copyd's page-cache probe (`copyd_engine::residency`) on files whose
//! pages were dropped: what decides whether a large file is copied by
//! several streams, and whether a tree's small files get more workers.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::{drop_until_uncached, on_tmpfs};
use copyd_engine::residency::{most_files_uncached, mostly_uncached};

#[test]
fn dropped_pages_count_as_uncached() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let mut file = File::create(&path).unwrap();
    file.write_all(&vec![7u8; 4 << 20]).unwrap();
    file.sync_all().unwrap();
    let file = File::open(&path).unwrap();
    let pieces: Vec<_> = (0..4u64).map(|i| i << 20..(i + 1) << 20).collect();
    assert_eq!(drop_until_uncached(&file, &pieces), !on_tmpfs(&file));
}

#[test]
fn a_sparse_file_is_judged_by_its_data() {
    // 1 MiB of data every 64 MiB of a 512 MiB file, written, synced and
    // dropped from the cache. Reading a hole needs no device (it reads as
    // zeros at once), so samples in holes would call the file cached.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.set_len(512 << 20).unwrap();
    let data = vec![3u8; 1 << 20];
    let pieces: Vec<_> = (0..8u64).map(|i| i << 26..(i << 26) + (1 << 20)).collect();
    for piece in &pieces {
        file.write_all_at(&data, piece.start).unwrap();
    }
    file.sync_all().unwrap();
    assert_eq!(drop_until_uncached(&file, &pieces), !on_tmpfs(&file));
    let holes: Vec<_> = pieces
        .iter()
        .map(|p| p.start + (32 << 20)..p.end + (32 << 20))
        .collect();
    assert!(!mostly_uncached(&file, &holes), "holes read as cached");
}

/// Small files written and dropped from the cache (on ext4, which can read
/// them back) count as uncached, and once read as cached; a tree of them
/// copied cold (with the extra workers that brings) is copied whole.
#[test]
fn small_files_dropped_then_read() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let paths: Vec<_> = (0..300).map(|n| tree.join(format!("f{n}"))).collect();
    for (n, path) in paths.iter().enumerate() {
        let mut file = File::create(path).unwrap();
        file.write_all(&common::pattern(1000 + n * 37, n as u64))
            .unwrap();
        file.sync_all().unwrap();
    }
    let files: Vec<File> = paths.iter().map(|p| File::open(p).unwrap()).collect();
    if on_tmpfs(&files[0]) {
        eprintln!("SKIP: /tmp is a tmpfs, whose pages cannot be dropped");
        return;
    }
    // A probe that misses starts readahead, which brings the page back: so
    // every file is dropped again before each look (retried, as ext4 may
    // hold a page's buffers a moment after the sync).
    let sample = || paths.iter().step_by(37).map(|p| p.as_path());
    let dropped = (0..50).any(|_| {
        for file in &files {
            rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        }
        let gone = most_files_uncached(sample());
        if !gone {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        gone
    });
    assert!(dropped, "the small files never looked uncached");

    let target = dir.path().join("copy");
    common::copy(&tree, &target, "auto", copyd_engine::Preserve::default()).unwrap();
    for path in &paths {
        let copy = target.join(path.file_name().unwrap());
        assert_eq!(std::fs::read(path).unwrap(), std::fs::read(copy).unwrap());
    }
    // Read, they count as cached.
    for path in &paths {
        std::fs::read(path).unwrap();
    }
    assert!(!most_files_uncached(sample()));
}
