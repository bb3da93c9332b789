//! Running one job's items on a few worker threads.
//!
//! Plain scoped threads pulling the next index from a shared counter: items
//! are independent (distinct files), so there is nothing to order. New
//! threads inherit the creating thread's credentials, so a transfer running
//! under a caller's fsuid/fsgid keeps them on every worker.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::Result;

/// The CPUs this process may use, asked once: the standard library reads
/// the cgroup's CPU quota files on every call, three opens a job.
pub fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The number of workers for `wanted` (0: one per CPU) and `items` items.
pub fn worker_count(wanted: usize, items: usize) -> usize {
    let wanted = match wanted {
        0 => cpus(),
        n => n,
    };
    wanted.min(items).max(1)
}

/// Calls `work` on every item, `workers` at a time. After the first error
/// no new item starts; that error is returned once the running ones end.
pub fn for_each<T: Sync>(
    workers: usize,
    items: &[T],
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let runs: Vec<_> = (0..items.len()).map(|i| i..i + 1).collect();
    for_each_run(workers, items, &runs, work)
}

/// Like [`for_each`], but a worker takes a whole run of items at a time:
/// `runs` are consecutive ranges of `items` covering them all, in the order
/// they are to be started. A tree's small files go in runs of one
/// directory each: a worker creates a directory's files while another works
/// in the next, instead of both taking turns in the same directory (whose
/// lock every creation takes) and scattering inode allocation.
pub fn for_each_run<T: Sync>(
    workers: usize,
    items: &[T],
    runs: &[std::ops::Range<usize>],
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    for_each_whole_run(workers, items, runs, |run, stopped| {
        for item in run {
            if stopped() {
                break;
            }
            work(item)?;
        }
        Ok(())
    })
}

/// Like [`for_each_run`], handing `work` each run whole (to copy its items
/// together), with a `stopped` check that turns true once any run failed:
/// `work` should then end early.
pub fn for_each_whole_run<T: Sync>(
    workers: usize,
    items: &[T],
    runs: &[std::ops::Range<usize>],
    work: impl Fn(&[T], &dyn Fn() -> bool) -> Result<()> + Sync,
) -> Result<()> {
    if workers <= 1 {
        return runs
            .iter()
            .try_for_each(|run| work(&items[run.clone()], &|| false));
    }
    let next = AtomicUsize::new(0);
    let claim = || {
        runs.get(next.fetch_add(1, Ordering::Relaxed))
            .map(|run| &items[run.clone()])
    };
    let failed = AtomicBool::new(false);
    let stopped = || failed.load(Ordering::Relaxed);
    let first_error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(claimed) = claim() {
                    if stopped() {
                        return;
                    }
                    if let Err(err) = work(claimed, &stopped) {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(err);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::EngineError;

    #[test]
    fn every_item_once_and_errors_stop_new_work() {
        let seen = Mutex::new(Vec::new());
        let items: Vec<u32> = (0..100).collect();
        for_each(4, &items, |i| {
            seen.lock().unwrap().push(*i);
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, items);

        let started = AtomicUsize::new(0);
        let err = for_each(2, &items, |i| {
            started.fetch_add(1, Ordering::Relaxed);
            if *i == 3 {
                return Err(EngineError::invalid("three"));
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.message, "three");
        assert!(started.load(Ordering::Relaxed) < 100);
        assert_eq!(worker_count(0, 1), 1);
        assert_eq!(worker_count(8, 3), 3);
    }

    #[test]
    fn runs_cover_every_item_once() {
        let items: Vec<u32> = (0..1000).collect();
        let runs = [0..1, 1..500, 500..501, 501..1000];
        let seen = Mutex::new(Vec::new());
        for_each_run(3, &items, &runs, |i| {
            seen.lock().unwrap().push(*i);
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, items);
    }
}
