//! Alert rules, evaluated in the daemon, thresholds from `[monitoring]`:
//! - `job-stalled:<id>`: a running job (not paused, not rate-limited to
//!   zero) whose byte and file counts have not moved for `stall_seconds`;
//! - `error-rate`: failed jobs and files over the last 5 minutes above
//!   `error_rate_per_minute`;
//! - `disk-full:<mount>`: a file system a job writes to is more than
//!   `disk_full_percent` full;
//! - `checkpoint-failures`: the last checkpoint write failed (cleared by
//!   the next one that succeeds);
//! - `polkit-unreachable`: the last polkit check got no answer (cleared by
//!   the next answer).
//!
//! One book per process (checkpoint writes and polkit checks happen deep
//! in layers that have no handle to pass it through). Changes go out on a
//! broadcast channel that the bus turns into AlertRaised/AlertCleared and
//! the Alerts property.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::jobs::{JobManager, JobState};
use crate::observe::Observer;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Alert {
    pub id: String,
    /// "warning" or "critical".
    pub severity: &'static str,
    pub message: String,
    /// µs since the epoch.
    pub since: u64,
}

#[derive(Debug, Clone)]
pub enum AlertChange {
    Raised(Alert),
    Cleared(String),
}

struct Book {
    active: Mutex<BTreeMap<String, Alert>>,
    changes: broadcast::Sender<AlertChange>,
    count: AtomicUsize,
}

static BOOK: LazyLock<Book> = LazyLock::new(|| Book {
    active: Mutex::new(BTreeMap::new()),
    changes: broadcast::channel(256).0,
    count: AtomicUsize::new(0),
});

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Raises `id` (or updates its message); a change is announced once.
pub fn raise(id: &str, severity: &'static str, message: String) {
    let mut active = BOOK.active.lock().unwrap();
    if active.get(id).is_some_and(|a| a.message == message) {
        return;
    }
    let since = active.get(id).map_or_else(now_us, |a| a.since);
    let alert = Alert {
        id: id.to_owned(),
        severity,
        message,
        since,
    };
    let new = active.insert(id.to_owned(), alert.clone()).is_none();
    BOOK.count.store(active.len(), Ordering::Relaxed);
    drop(active);
    if new {
        tracing::warn!(alert = %alert.id, severity, message = %alert.message, "alert raised");
    }
    let _ = BOOK.changes.send(AlertChange::Raised(alert));
}

pub fn clear(id: &str) {
    let mut active = BOOK.active.lock().unwrap();
    if active.remove(id).is_none() {
        return;
    }
    BOOK.count.store(active.len(), Ordering::Relaxed);
    drop(active);
    tracing::info!(alert = id, "alert cleared");
    let _ = BOOK.changes.send(AlertChange::Cleared(id.to_owned()));
}

pub fn active() -> Vec<Alert> {
    BOOK.active.lock().unwrap().values().cloned().collect()
}

pub fn active_count() -> usize {
    BOOK.count.load(Ordering::Relaxed)
}

pub fn subscribe() -> broadcast::Receiver<AlertChange> {
    BOOK.changes.subscribe()
}

pub fn checkpoint_written(ok: bool) {
    if ok {
        clear("checkpoint-failures");
    } else {
        raise(
            "checkpoint-failures",
            "critical",
            "a job's checkpoint could not be written: it cannot resume after a crash".into(),
        );
    }
}

pub fn polkit_unreachable(why: &str) {
    raise(
        "polkit-unreachable",
        "critical",
        format!("polkit gave no answer ({why}): calls that need it are refused"),
    );
}

pub fn polkit_answered() {
    clear("polkit-unreachable");
}

/// Thresholds, from `[monitoring]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub stall_seconds: u64,
    pub error_rate_per_minute: f64,
    pub disk_full_percent: f64,
}

/// Evaluates the rules that need looking at every second, for as long as
/// copyd runs.
pub fn start(jobs: Arc<JobManager>, observer: Arc<Observer>) {
    tokio::spawn(async move {
        // Per running job: its last counts and when they last moved.
        let mut moved: HashMap<String, ((u64, u64), Instant)> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let thresholds = jobs.alert_thresholds();
            let mut destinations: BTreeMap<PathBuf, ()> = BTreeMap::new();
            let mut running = Vec::new();
            for job in jobs.list() {
                let id = format!("job-stalled:{}", job.id);
                let state = job.state();
                // Paused is not stalled, and neither is a job held back by a
                // rate limit (0 means none; a limit cannot stop a job, but
                // below 64 KiB/s one chunk may take longer than
                // stall_seconds).
                let limit = [job.rate_limit(), jobs.global_rate_limit()]
                    .into_iter()
                    .filter(|l| *l > 0)
                    .min();
                let held = limit.is_some_and(|l| l < 64 << 10);
                if state != JobState::Running || held {
                    moved.remove(&job.id);
                    clear(&id);
                    continue;
                }
                running.push(job.id.clone());
                destinations.insert(job.destination.clone(), ());
                let snapshot = job.progress.snapshot();
                let counts = (snapshot.bytes_done, snapshot.files_done);
                let entry = moved
                    .entry(job.id.clone())
                    .or_insert((counts, Instant::now()));
                if entry.0 != counts {
                    *entry = (counts, Instant::now());
                    clear(&id);
                } else if entry.1.elapsed().as_secs() >= thresholds.stall_seconds {
                    raise(
                        &id,
                        "warning",
                        format!(
                            "job {} has made no progress for {} s",
                            job.id,
                            entry.1.elapsed().as_secs()
                        ),
                    );
                }
            }
            moved.retain(|id, _| running.contains(id));
            for alert in active() {
                if let Some(id) = alert.id.strip_prefix("job-stalled:") {
                    if !running.iter().any(|r| r == id) {
                        clear(&alert.id);
                    }
                }
            }
            let rate = observer.errors_per_minute();
            if rate > thresholds.error_rate_per_minute {
                raise(
                    "error-rate",
                    "warning",
                    format!(
                        "{rate:.1} errors per minute over the last 5 minutes (threshold {})",
                        thresholds.error_rate_per_minute
                    ),
                );
            } else {
                clear("error-rate");
            }
            let mut full_now = Vec::new();
            for fs in crate::health::file_systems(destinations.keys()) {
                let id = format!("disk-full:{}", fs.mount_point);
                if fs.used_percent > thresholds.disk_full_percent {
                    full_now.push(id.clone());
                    raise(
                        &id,
                        "warning",
                        format!(
                            "{} is {:.0}% full (threshold {}%)",
                            fs.mount_point, fs.used_percent, thresholds.disk_full_percent
                        ),
                    );
                }
            }
            for alert in active() {
                if alert.id.starts_with("disk-full:") && !full_now.contains(&alert.id) {
                    clear(&alert.id);
                }
            }
        }
    });
}
