//! What `verify` costs on one large file: the copy with a digest against
//! the same copy without, the digest's rate against sha256sum's, and the
//! read-back against one read of the file from the device.
//!
//! cargo run --release -p copyd-engine --example verify_bench -- DIR [MiB] [rounds]
//!
//! Writes a file of MiB (default 2048) in DIR, cached, and copies it within
//! DIR in alternating rounds (default 5), durably: engine auto without
//! verify (the kernel's copy_file_range), then for each of io_uring and
//! standard without verify, with crc32 and with sha256. Each time is the
//! copy's with the read-back taken out (the engine counts it apart); the
//! read-back is reported on its own, beside a read of the same bytes from
//! the device (fdatasync, POSIX_FADV_DONTNEED, read). Prints medians and
//! the medians of per-round ratios.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use copyd_engine::verify::Verify;
use copyd_engine::{resolve, run, Control, EngineSet, Operation, Options, Progress, Request};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: verify_bench DIR [MiB] [rounds]");
        std::process::exit(2);
    };
    let mib: u64 = args.get(2).map_or(2048, |s| s.parse().expect("MiB"));
    let rounds: usize = args.get(3).map_or(5, |s| s.parse().expect("rounds"));
    let source = dir.join("verify-bench.src");
    make_source(&source, mib);
    let engines = EngineSet::probe();
    let cases: Vec<(&str, Verify)> = vec![
        ("auto", Verify::None),
        ("io_uring", Verify::None),
        ("io_uring", Verify::Crc32),
        ("io_uring", Verify::Sha256),
        ("standard", Verify::None),
        ("standard", Verify::Crc32),
        ("standard", Verify::Sha256),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let (mut read_backs, mut device_reads, mut sha256sum) = (Vec::new(), Vec::new(), Vec::new());
    let (mut crc_read_backs, mut hash_only, mut fresh_reads) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for (i, (engine, verify)) in cases.iter().enumerate() {
            let target = dir.join(format!("verify-bench.{round}.{i}"));
            let (copy, read_back) = copy(&source, &target, engine, *verify, &engines);
            times[i].push(copy.as_secs_f64());
            if *verify == Verify::Sha256 && *engine == "io_uring" {
                read_backs.push(read_back.as_secs_f64());
                device_reads.push(read_from_device(&target).as_secs_f64());
            }
            if *verify == Verify::Crc32 && *engine == "io_uring" {
                crc_read_backs.push(read_back.as_secs_f64());
            }
            fs::remove_file(&target).unwrap();
        }
        sha256sum.push(time_sha256sum(&source));
        hash_only.push(time_digest(&source, Verify::Sha256));
        fresh_reads.push(fresh_read(&dir, &source).as_secs_f64());
        eprintln!("round {} of {rounds} done", round + 1);
    }
    let gib = mib as f64 / 1024.0;
    println!(
        "{mib} MiB in {}, {rounds} alternating rounds, medians:",
        dir.display()
    );
    println!("| engine | verify | copy (read-back excluded) | GiB/s | vs same engine, none | vs auto, none |");
    println!("|---|---|---|---|---|---|");
    let base_of = |engine: &str| {
        cases
            .iter()
            .position(|c| c.0 == engine && c.1 == Verify::None)
            .unwrap()
    };
    for (i, (engine, verify)) in cases.iter().enumerate() {
        let ratio = |base: usize| {
            median(
                times[i]
                    .iter()
                    .zip(&times[base])
                    .map(|(a, b)| a / b)
                    .collect(),
            )
        };
        println!(
            "| {engine} | {} | {:.3} s | {:.2} | {:.2}× | {:.2}× |",
            verify.name(),
            median(times[i].clone()),
            gib / median(times[i].clone()),
            ratio(base_of(engine)),
            ratio(0)
        );
    }
    let sha_copy = cases
        .iter()
        .position(|c| c.0 == "io_uring" && c.1 == Verify::Sha256)
        .unwrap();
    println!(
        "sha256sum of the cached source: {:.3} s ({:.2} GiB/s); copy with sha256 by io_uring at {:.0}% of its rate",
        median(sha256sum.clone()),
        gib / median(sha256sum.clone()),
        100.0 * median(sha256sum.iter().zip(&times[sha_copy]).map(|(s, c)| s / c).collect())
    );
    let device = median(device_reads.clone());
    let fresh = median(fresh_reads.clone());
    println!(
        "a file written, fdatasynced and dropped from the cache, read at once (as a read-back is): {fresh:.3} s; read-back by crc32 {:.2}×, by sha256 {:.2}× of that",
        median(crc_read_backs.clone()) / fresh,
        median(read_backs.clone()) / fresh,
    );
    println!(
        "one read of the copy from the device, later: {device:.3} s; read-back by crc32: {:.3} s ({:.2}×); by sha256: {:.3} s ({:.2}×), against the sha256 of the cached file alone: {:.3} s",
        median(crc_read_backs.clone()),
        median(crc_read_backs.clone()) / device,
        median(read_backs.clone()),
        median(read_backs.clone()) / device,
        median(hash_only.clone()),
    );
    fs::remove_file(&source).unwrap();
}

/// Copies `source` to `target`, durably (as copyd's default: every case
/// waits for its copy to reach the disk, as a digest's read-back must
/// anyway), and returns (the copy's time without the read-back, the
/// read-back's time).
fn copy(
    source: &Path,
    target: &Path,
    engine: &str,
    verify: Verify,
    engines: &EngineSet,
) -> (Duration, Duration) {
    let options = Options {
        engine: engine.into(),
        verify,
        sync: true,
        ..Options::default()
    };
    let resolved = resolve(Request {
        operation: Operation::Copy,
        sources: vec![source.to_path_buf()],
        destination: target.to_path_buf(),
        options,
    })
    .unwrap();
    let (progress, control) = (Progress::new(), Control::default());
    let began = Instant::now();
    run(&resolved, engines, "bench", &progress, &control).unwrap();
    let took = began.elapsed();
    let read_back = progress.read_back_time();
    (took - read_back, read_back)
}

fn make_source(path: &Path, mib: u64) {
    let mut file = File::create(path).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..mib {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
    // Read once so the rounds start with it cached.
    let mut sink = vec![0u8; 1 << 20];
    let mut reader = File::open(path).unwrap();
    while reader.read(&mut sink).unwrap() > 0 {}
}

/// A read of `path` from the device: its pages written and dropped first.
fn read_from_device(path: &Path) -> Duration {
    let file = File::open(path).unwrap();
    file.sync_data().unwrap();
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let began = Instant::now();
    let mut buffer = vec![0u8; 1 << 20];
    let mut reader = &file;
    while reader.read(&mut buffer).unwrap() > 0 {}
    began.elapsed()
}

fn time_sha256sum(path: &Path) -> f64 {
    let began = Instant::now();
    let status = Command::new("sha256sum")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    began.elapsed().as_secs_f64()
}

/// A copy of `source` made by plain writes, fdatasynced, dropped from the
/// cache and read at once: what reading back a copy just written costs on
/// this storage, without copyd.
fn fresh_read(dir: &Path, source: &Path) -> Duration {
    let path = dir.join("verify-bench.fresh");
    let mut copy = File::create(&path).unwrap();
    let mut reader = File::open(source).unwrap();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        copy.write_all(&buffer[..n]).unwrap();
    }
    let took = read_from_device(&path);
    fs::remove_file(&path).unwrap();
    took
}

/// The digest of the cached `path` alone: the hash's own rate.
fn time_digest(path: &Path, method: Verify) -> f64 {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let digest = copyd_engine::verify::SourceDigest::new(method).unwrap();
    let began = Instant::now();
    copyd_engine::verify::read_into(&digest, &file, 0, len).unwrap();
    let _ = digest.finish(len);
    began.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}
