//! Bytes and files are counted together: a sampled progress never shows a
//! file done without its bytes, nor files done while no byte is (a tree's
//! directories used to count as done when made, before any file's copy).

mod common;

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use copyd_engine::{
    resolve, run, Control, EngineSet, Operation, Options, Progress, ProgressSnapshot, Request,
};

const DIRECTORIES: usize = 200;
const FILE: usize = 16 << 10;

/// Copies a tree of DIRECTORIES directories of one FILE-byte file each with
/// `engine`, rate limited so that sampling sees it on its way, and returns
/// the samples and the last snapshot.
fn sampled_copy(engine: &str) -> (Vec<ProgressSnapshot>, ProgressSnapshot) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for i in 0..DIRECTORIES {
        let sub = src.join(format!("d{i:03}"));
        fs::create_dir_all(&sub).unwrap();
        common::write_file(&sub.join("f"), FILE, i as u64);
    }
    let resolved = resolve(Request {
        operation: Operation::Copy,
        sources: vec![src],
        destination: dir.path().join("dst"),
        options: Options {
            recursive: true,
            engine: engine.into(),
            rate_limit: 4 << 20,
            ..Options::default()
        },
    })
    .unwrap();
    let (progress, control) = (Progress::new(), Control::default());
    let done = AtomicBool::new(false);
    let samples = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                samples.push(progress.snapshot());
                thread::sleep(Duration::from_micros(200));
            }
            samples
        });
        let outcome = run(&resolved, &EngineSet::probe(), "test", &progress, &control);
        done.store(true, Ordering::Relaxed);
        outcome.unwrap();
        sampler.join().unwrap()
    });
    (samples, progress.snapshot())
}

#[test]
fn files_done_never_run_ahead_of_their_bytes() {
    for engine in ["auto", "standard", "io_uring"] {
        if engine != "auto" && !EngineSet::probe().names().contains(&engine) {
            continue;
        }
        let (samples, last) = sampled_copy(engine);
        let (files, bytes) = (DIRECTORIES as u64, (DIRECTORIES * FILE) as u64);
        assert_eq!(last.bytes_done, bytes, "{engine}");
        assert_eq!(last.files_done, last.files_total, "{engine}");
        // Files, their directories and the tree's root.
        assert_eq!(last.files_total, 2 * files + 1, "{engine}");
        let moving = samples
            .iter()
            .filter(|s| s.bytes_done > 0 && s.bytes_done < bytes)
            .count();
        assert!(moving >= 10, "{engine}: only {moving} samples mid-copy");
        for s in &samples {
            // Every file counted done has all its bytes counted.
            let files_counted = s.files_done.min(files);
            assert!(
                s.bytes_done >= files_counted * FILE as u64,
                "{engine}: {} files done but {} bytes ({s:?})",
                s.files_done,
                s.bytes_done
            );
        }
    }
}
