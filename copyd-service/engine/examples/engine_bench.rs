//! Throughput of each engine on one large file, warm cache: the numbers
//! behind the `auto` order (`engines::BYTE_MOVER_ORDER`).
//!
//! cargo run --release -p copyd-engine --example engine_bench -- SRC_DIR DST_DIR [MiB] [runs]
//!
//! Writes a file of MiB (default 1024) non-zero, non-sparse bytes in SRC_DIR,
//! reads it once so it is cached, then copies it into DST_DIR with every
//! engine `runs` times (default 3) and prints the best MB/s without and with
//! the final fdatasync.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use copyd_engine::engines::IoUringConfig;
use copyd_engine::engines::{CopyContext, EngineSet};
use copyd_engine::{Control, Progress};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: engine_bench SRC_DIR DST_DIR [MiB] [runs]");
        std::process::exit(2);
    }
    let (src_dir, dst_dir) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let mib: u64 = args.get(3).map_or(1024, |s| s.parse().expect("MiB"));
    let runs: usize = args.get(4).map_or(3, |s| s.parse().expect("runs"));
    let source = src_dir.join("copyd-bench.src");
    make_source(&source, mib);

    // COPYD_BENCH_QD and COPYD_BENCH_BUF_KIB tune the io_uring engine.
    let mut config = IoUringConfig::default();
    if let Ok(depth) = std::env::var("COPYD_BENCH_QD") {
        config.queue_depth = depth.parse().expect("COPYD_BENCH_QD");
    }
    if let Ok(kib) = std::env::var("COPYD_BENCH_BUF_KIB") {
        config.buffer_bytes = kib.parse::<usize>().expect("COPYD_BENCH_BUF_KIB") << 10;
    }
    let engines = EngineSet::probe_with(config);
    println!(
        "{} MiB, {} -> {}, engines {:?}",
        mib,
        src_dir.display(),
        dst_dir.display(),
        engines.names()
    );
    // COPYD_BENCH_ENGINES=a,b,... measures only these, in this order.
    let names: Vec<String> = match std::env::var("COPYD_BENCH_ENGINES") {
        Ok(list) => list.split(',').map(str::to_owned).collect(),
        Err(_) => engines.names().iter().map(|n| n.to_string()).collect(),
    };
    for name in names.iter().map(String::as_str) {
        let chain = engines.select(name).unwrap();
        let (mut best_copy, mut best_synced) = (f64::MAX, f64::MAX);
        let mut result = String::new();
        for run in 0..runs {
            let target = dst_dir.join(format!("copyd-bench.{name}.{run}"));
            let src = File::open(&source).unwrap();
            let dst = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&target)
                .unwrap();
            let (progress, control) = (Progress::new(), Control::default());
            let ctx = CopyContext {
                progress: &progress,
                control: &control,
                source: &source,
                observer: None,
            };
            let start = Instant::now();
            let outcome = chain[0].copy_range(&src, &dst, 0, mib << 20, &ctx);
            let copied = start.elapsed().as_secs_f64();
            dst.sync_data().unwrap();
            let synced = start.elapsed().as_secs_f64();
            drop(dst);
            fs::remove_file(&target).unwrap();
            match outcome {
                Ok(()) => {
                    best_copy = best_copy.min(copied);
                    best_synced = best_synced.min(synced);
                }
                Err(err) => {
                    result = format!("{err:?}");
                    break;
                }
            }
        }
        let mb = (mib << 20) as f64 / 1e6;
        if result.is_empty() {
            println!(
                "{name:>16}: {:8.0} MB/s page cache, {:8.0} MB/s with fdatasync",
                mb / best_copy,
                mb / best_synced
            );
        } else {
            println!("{name:>16}: {result}");
        }
    }
    fs::remove_file(&source).unwrap();
}

/// A file of pseudo-random bytes (so nothing can skip or compress it), read
/// back once so the page cache holds it.
fn make_source(path: &Path, mib: u64) {
    let mut file = File::create(path).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..mib {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let mut file = File::open(path).unwrap();
    while file.read(&mut sink).unwrap() > 0 {}
}
