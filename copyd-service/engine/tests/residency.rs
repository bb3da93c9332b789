//! copyd's page-cache probe (`copyd_engine::residency`) on files whose
//! pages were dropped: what decides whether a large file is copied by
//! several streams.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::{drop_until_uncached, on_tmpfs};
use copyd_engine::residency::mostly_uncached;

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
