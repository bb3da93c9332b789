//! Every engine on every kind of file system this machine has: ext4 (/tmp),
//! tmpfs (/dev/shm), and loop-mounted btrfs and XFS, plus the fallbacks
//! between them.

mod common;

use std::fs;
use std::path::Path;

use common::{copy, drop_until_uncached, physical_extents, write_file, ScratchMount};
use copyd_engine::{EngineSet, ErrorKind, Preserve};

/// Large enough for the io_uring engine to reuse every slot, odd-sized so
/// the last chunk is short.
const SIZE: usize = (20 << 20) + 12_345;

/// Copies a file within `dir` with each usable engine, forced; returns the
/// engines that said "not supported here".
fn every_engine_in(dir: &Path) -> Vec<&'static str> {
    let source = dir.join("source");
    let data = write_file(&source, SIZE, 1);
    let mut unsupported = Vec::new();
    for engine in EngineSet::probe().names() {
        let target = dir.join(format!("copy-{engine}"));
        match copy(&source, &target, engine, Preserve::default()) {
            Ok(copied) => {
                assert!(
                    fs::read(&target).unwrap() == data,
                    "{engine} copied wrong bytes"
                );
                assert_eq!(
                    copied.engine_bytes.get(engine),
                    Some(&(SIZE as u64)),
                    "{engine}"
                );
                assert_eq!(
                    copied.engine_bytes.len(),
                    1,
                    "{engine}: {:?}",
                    copied.engine_bytes
                );
                let snap = copied.progress.snapshot();
                assert_eq!(
                    (snap.bytes_done, snap.bytes_total),
                    (SIZE as u64, SIZE as u64)
                );
            }
            Err(err) => {
                assert_eq!(err.kind, ErrorKind::NotSupported, "{engine}: {err}");
                assert!(!target.exists(), "{engine} left a target behind");
                unsupported.push(engine);
            }
        }
    }
    let leftovers: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| copyd_engine::fsutil::is_temp_name(n))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    unsupported
}

#[test]
fn the_usual_engines_are_usable() {
    let names = EngineSet::probe().names();
    for engine in ["reflink", "copy_file_range", "splice", "standard"] {
        assert!(names.contains(&engine), "{engine} missing from {names:?}");
    }
    // io_uring depends on the kernel and its settings: say what we found.
    eprintln!("engines here: {names:?}");
    assert_eq!(names.last(), Some(&"standard"));
}

#[test]
fn every_engine_on_ext4() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    // ext4 has no reflinks; everything else must work.
    assert_eq!(every_engine_in(dir.path()), ["reflink"]);
}

#[test]
fn every_engine_on_tmpfs() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    assert_eq!(every_engine_in(dir.path()), ["reflink"]);
}

/// On a file system with reflinks, every engine works and the reflink
/// engine's copy shares the source's physical extents.
fn reflinks_on(kind: &str) {
    let Some(mount) = ScratchMount::loop_fs(kind, 512) else {
        return;
    };
    assert!(every_engine_in(&mount.path).is_empty());

    let source = mount.path.join("shared-source");
    write_file(&source, SIZE, 2);
    let target = mount.path.join("shared-copy");
    let copied = copy(&source, &target, "auto", Preserve::default()).unwrap();
    assert_eq!(copied.engine_bytes.keys().collect::<Vec<_>>(), [&"reflink"]);
    let (original, clone) = (physical_extents(&source), physical_extents(&target));
    assert!(
        !original.is_empty(),
        "filefrag shows no extents for the source"
    );
    assert_eq!(
        original, clone,
        "a reflink copy must share the source's extents"
    );
}

#[test]
fn every_engine_and_reflinks_on_btrfs() {
    reflinks_on("btrfs");
}

#[test]
fn every_engine_and_reflinks_on_xfs() {
    reflinks_on("xfs");
}

/// btrfs to tmpfs: no reflink, no copy_file_range across file systems, so
/// auto falls through to the first byte mover and says so.
#[test]
fn auto_falls_through_across_file_systems() {
    let Some(mount) = ScratchMount::loop_fs("btrfs", 256) else {
        return;
    };
    let source = mount.path.join("source");
    let data = write_file(&source, SIZE, 3);
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let target = dir.path().join("copy");
    let copied = copy(&source, &target, "auto", Preserve::default()).unwrap();
    assert!(fs::read(&target).unwrap() == data);
    let used: Vec<_> = copied.engine_bytes.keys().copied().collect();
    assert_eq!(used.len(), 1, "one engine moves all the bytes: {used:?}");
    assert!(!used.contains(&"reflink"), "{used:?}");
    // Forcing reflink across file systems is refused, and leaves nothing.
    let forced = dir.path().join("forced");
    let err = copy(&source, &forced, "reflink", Preserve::default())
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::NotSupported);
    assert!(!forced.exists());
}

/// A real error (ENOSPC here) fails the file at once: the next engines are
/// not tried, and no temporary is left.
#[test]
fn running_out_of_space_is_not_retried() {
    let Some(mount) = ScratchMount::small_tmpfs(1024) else {
        return;
    };
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("big");
    write_file(&source, 4 << 20, 4);
    let err = copy(
        &source,
        &mount.path.join("big"),
        "auto",
        Preserve::default(),
    )
    .err()
    .expect("a 4 MiB copy cannot fit in 1 MiB");
    assert_eq!(err.kind, ErrorKind::NoSpace, "{err}");
    assert_eq!(
        fs::read_dir(&mount.path).unwrap().count(),
        0,
        "nothing may be left behind"
    );
}

#[test]
fn forcing_an_unknown_engine_is_refused() {
    let set = EngineSet::probe();
    assert_eq!(
        set.select("warp-drive").err().unwrap().kind,
        ErrorKind::NotSupported
    );
    assert!(!EngineSet::is_known("warp-drive"));
    for name in set.names() {
        assert!(EngineSet::is_known(name));
        assert_eq!(set.select(name).unwrap().len(), 1);
    }
    assert_eq!(set.select("auto").unwrap().len(), set.names().len());
}

/// A tiny ring (3 slots of one page) cycles every slot many times and must
/// still copy exactly; a cancel mid-copy stops it, and the ring it used is
/// clean enough for the next copy.
#[test]
fn io_uring_with_tiny_buffers_and_a_cancel() {
    use copyd_engine::engines::{CopyContext, FileCopier};
    use copyd_engine::engines::{IoUringConfig, IoUringCopier};
    use copyd_engine::{Control, Progress};

    let Some(engine) = IoUringCopier::probe(IoUringConfig {
        queue_depth: 3,
        buffer_bytes: 3 * 4096,
    }) else {
        eprintln!("SKIP: io_uring unavailable here");
        return;
    };
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("source");
    let data = write_file(&source, (1 << 20) + 7, 5);
    let copy_into = |name: &str, control: &Control| {
        let src = fs::File::open(&source).unwrap();
        let dst = fs::File::create(dir.path().join(name)).unwrap();
        let progress = Progress::new();
        let ctx = CopyContext {
            progress: &progress,
            control,
            source: &source,
            observer: None,
        };
        let result = engine.copy_range(&src, &dst, 0, data.len() as u64, &ctx);
        (result, progress.snapshot().bytes_done)
    };

    let cancelled = Control::default();
    cancelled.set_rate_limit(64 << 10); // slow enough to cancel mid-way
    std::thread::scope(|scope| {
        let copying = scope.spawn(|| copy_into("cancelled", &cancelled));
        std::thread::sleep(std::time::Duration::from_millis(100));
        cancelled.cancel();
        let (result, done) = copying.join().unwrap();
        assert!(result.is_err(), "a cancelled copy must fail");
        assert!(done < data.len() as u64);
    });

    let (result, done) = copy_into("copy", &Control::default());
    result.unwrap();
    assert_eq!(done, data.len() as u64);
    assert!(fs::read(dir.path().join("copy")).unwrap() == data);
}

/// A large file whose bytes are not in the page cache is copied by several
/// streams at once (see `copyd_engine::residency`); whatever order its
/// pieces land in, the copy is exact, with every byte-moving engine.
#[test]
fn a_large_uncached_file_is_copied_exactly_by_every_byte_mover() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("source");
    // Three and a half 32 MiB pieces: the streams share them unevenly.
    let data = write_file(&source, (112 << 20) + 4_321, 7);
    for engine in ["copy_file_range", "splice", "io_uring", "standard"] {
        if !EngineSet::probe().names().contains(&engine) {
            continue;
        }
        let file = fs::File::open(&source).unwrap();
        file.sync_all().unwrap();
        let size = data.len() as u64;
        assert!(
            drop_until_uncached(&file, std::slice::from_ref(&(0..size))),
            "the source's pages should be gone from /tmp's page cache"
        );
        let target = dir.path().join(format!("copy-{engine}"));
        let copied = copy(&source, &target, engine, Preserve::default()).unwrap();
        assert!(
            fs::read(&target).unwrap() == data,
            "{engine} copied wrong bytes"
        );
        assert_eq!(copied.engine_bytes.get(engine), Some(&size), "{engine}");
        fs::remove_file(&target).unwrap();
    }
}
