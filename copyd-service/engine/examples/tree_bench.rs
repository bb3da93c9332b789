//! The engine alone on a tree, as the daemon runs it (a kept journal, so the
//! group commits happen), without D-Bus: how long the walk takes and how
//! long the whole transfer, to tell engine time from daemon overhead.
//!
//! cargo run --release -p copyd-engine --example tree_bench -- SRC DST_PREFIX [runs] [workers] [nojournal|nosync]
//!
//! SRC may also be a single file. `ENGINE=io_uring` (any engine name)
//! forces an engine; `PRESERVE=mode` (a comma list, or `none`) sets what
//! metadata is kept (default: mode and timestamps, as the daemon's).
//!
//! Copies SRC to DST_PREFIX.0, DST_PREFIX.1, … (fresh names, nothing is
//! deleted: deleting many files right before creating many slows ext4's
//! inode allocator) and prints the walk time and the transfer time of each.

use std::path::{Path, PathBuf};
use std::time::Instant;

use copyd_engine::{
    resolve, Control, CopyIdentity, EngineSet, FileIdentity, Journal, NoJournal, Operation,
    Options, Preserve, Progress, Request, ResumeState,
};

/// Keeps nothing, but says it does: the transfer then syncs as it does
/// under the daemon.
struct CountingJournal;

impl Journal for CountingJournal {
    fn item_started(&self, _: usize) {}
    fn items_built(&self, _: &[(usize, CopyIdentity)]) {}
    fn item_done(&self, _: usize) {}
    fn files_durable(&self, _: usize, _: &[PathBuf]) {}
    fn file_offset(&self, _: usize, _: &Path, _: FileIdentity, _: u64) {}
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: tree_bench SRC DST_PREFIX [runs] [workers] [nojournal|nosync]");
        std::process::exit(2);
    }
    let runs: usize = args.get(3).map_or(3, |s| s.parse().expect("runs"));
    let workers: usize = args.get(4).map_or(0, |s| s.parse().expect("workers"));
    let source = PathBuf::from(&args[1]);
    // "nojournal": a transfer nobody will resume (no group commits);
    // "nosync": the `sync` option off (no syncs at all, as cp).
    let mode = args.get(5).map(String::as_str);
    let journal: &dyn Journal = match mode {
        Some("nojournal") => &NoJournal,
        _ => &CountingJournal,
    };
    let sync = mode != Some("nosync");
    let engines = EngineSet::probe();
    let engine = std::env::var("ENGINE").unwrap_or_else(|_| "auto".into());
    let preserve = match std::env::var("PRESERVE").as_deref() {
        Err(_) => Preserve::default(),
        Ok("none") => Preserve::from_names([]).unwrap(),
        Ok(names) => Preserve::from_names(names.split(',')).expect("PRESERVE"),
    };
    for run in 0..runs {
        let destination = PathBuf::from(format!("{}.{run}", args[2]));
        let started = Instant::now();
        // A single file (large-file runs) has no tree to walk.
        let entries = match source.is_dir() {
            true => copyd_engine::walk::walk(&source, &Control::default())
                .unwrap()
                .entries
                .len(),
            false => 1,
        };
        let walked = started.elapsed();
        let request = Request {
            operation: Operation::Copy,
            sources: vec![source.clone()],
            destination: destination.clone(),
            options: Options {
                recursive: true,
                workers,
                sync,
                engine: engine.clone(),
                preserve,
                ..Options::default()
            },
        };
        let resolved = resolve(request).unwrap();
        let (progress, control) = (Progress::new(), Control::default());
        let started = Instant::now();
        copyd_engine::run_resumable(
            &resolved,
            &engines,
            &format!("bench{run}"),
            &progress,
            &control,
            &ResumeState::default(),
            journal,
        )
        .unwrap();
        println!(
            "run {run}: {} entries, walk {:.3} s, transfer {:.3} s",
            entries,
            walked.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
}
