//! Running one job's items on a few worker threads.
//!
//! Plain scoped threads pulling the next index from a shared counter: items
//! are independent (distinct files), so there is nothing to order. New
//! threads inherit the creating thread's credentials, so a transfer running
//! under a caller's fsuid/fsgid keeps them on every worker.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::Result;

/// The number of workers for `wanted` (0: one per CPU) and `items` items.
pub fn worker_count(wanted: usize, items: usize) -> usize {
    let wanted = match wanted {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
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
    for_each_chunked(workers, items, items.len(), 1, work)
}

/// Like [`for_each`], but a worker takes the first `singles` items one at a
/// time and the rest `chunk` consecutive items at a time. A tree's small
/// files, in walk order, go in chunks: a worker then creates a run of files
/// in one directory while another works in the next, instead of both taking
/// turns in the same directories (contended directory locks, scattered
/// inode allocation).
pub fn for_each_chunked<T: Sync>(
    workers: usize,
    items: &[T],
    singles: usize,
    chunk: usize,
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    if workers <= 1 {
        return items.iter().try_for_each(work);
    }
    let chunk = chunk.max(1);
    let next = AtomicUsize::new(0);
    let claim = || {
        let mut start = next.load(Ordering::Relaxed);
        loop {
            if start >= items.len() {
                return None;
            }
            let end = if start < singles {
                start + 1
            } else {
                (start + chunk).min(items.len())
            };
            match next.compare_exchange_weak(start, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(&items[start..end]),
                Err(now) => start = now,
            }
        }
    };
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while let Some(claimed) = claim() {
                    for item in claimed {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        if let Err(err) = work(item) {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().unwrap().get_or_insert(err);
                        }
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
    fn chunks_cover_every_item_once() {
        let items: Vec<u32> = (0..1000).collect();
        for (singles, chunk) in [(0, 16), (10, 7), (1000, 16), (0, 1), (3, 5000)] {
            let seen = Mutex::new(Vec::new());
            for_each_chunked(3, &items, singles, chunk, |i| {
                seen.lock().unwrap().push(*i);
                Ok(())
            })
            .unwrap();
            let mut seen = seen.into_inner().unwrap();
            seen.sort();
            assert_eq!(seen, items, "singles {singles}, chunk {chunk}");
        }
    }
}
