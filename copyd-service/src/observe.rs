//! What copyd has done since it started, from the job-event stream: the
//! counters behind the Prometheus metrics ([`crate::metrics`]), `Health()`
//! and `Performance()`. One subscriber, always running (the numbers are
//! there for `copyctl perf` whether or not metrics are served); each event
//! also bumps the `metrics` crate's counters, which cost nothing when no
//! exporter is installed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;

use crate::jobs::events::JobUpdate;
use crate::jobs::{JobEvent, JobManager, JobState};

/// How many finished jobs `Performance()` remembers.
pub const RECENT_JOBS: usize = 50;
/// The window of the error rate in `Health()`.
pub const ERROR_WINDOW: Duration = Duration::from_secs(300);

/// One finished job, as the performance report shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobSummary {
    pub id: String,
    pub operation: &'static str,
    pub state: &'static str,
    pub bytes: u64,
    pub files: u64,
    pub duration_seconds: f64,
    pub queue_wait_seconds: f64,
    /// The engine that moved most of its bytes ("" if none moved).
    pub main_engine: String,
}

/// Per engine, since copyd started.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EngineTotals {
    pub bytes: u64,
    /// Jobs in which the engine moved bytes (the engine does not count its
    /// system calls; a job is the unit `auto` chooses for).
    pub operations: u64,
    /// Seconds of the jobs it moved bytes in, weighted by its share of
    /// their bytes: bytes / this is its throughput.
    pub seconds: f64,
}

#[derive(Debug, Default)]
struct Totals {
    engines: BTreeMap<String, EngineTotals>,
    files: u64,
    bytes: u64,
    jobs: BTreeMap<(String, String), u64>,
    queue_waits: VecDeque<f64>,
    recent: VecDeque<JobSummary>,
    /// When jobs and files failed, for the error rate.
    errors: VecDeque<Instant>,
    events_missed: u64,
}

/// What one running job has been counted for so far.
#[derive(Debug, Default)]
struct Seen {
    files: u64,
    engine_bytes: BTreeMap<&'static str, u64>,
    engine_operations: BTreeMap<&'static str, u64>,
    retries: u64,
    queue_wait_counted: bool,
    failures: usize,
}

pub struct Observer {
    started: Instant,
    totals: Mutex<Totals>,
}

impl Observer {
    /// Starts counting `jobs`' events.
    pub fn start(jobs: &Arc<JobManager>) -> Arc<Observer> {
        let observer = Arc::new(Observer {
            started: Instant::now(),
            totals: Mutex::new(Totals::default()),
        });
        let mut events = jobs.subscribe();
        let (me, jobs) = (observer.clone(), jobs.clone());
        tokio::spawn(async move {
            let mut seen: HashMap<Arc<str>, Seen> = HashMap::new();
            loop {
                match events.recv().await {
                    Ok(update) => me.count(&jobs, &mut seen, update),
                    // Byte and file counts are taken as differences from
                    // the job's own counters, so a missed progress event
                    // loses nothing; a missed end does (said in the log).
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "metrics fell behind the job-event stream");
                        me.totals.lock().unwrap().events_missed += missed;
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        observer
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn count(&self, jobs: &JobManager, seen: &mut HashMap<Arc<str>, Seen>, update: JobUpdate) {
        let Some(job) = jobs.get(&update.job_id) else {
            return;
        };
        let entry = seen.entry(update.job_id.clone()).or_default();
        // Always from the job's own counters: exact, whatever was missed.
        let files_done = job.progress.snapshot().files_done;
        let engine_bytes = job.progress.engine_bytes();
        let mut totals = self.totals.lock().unwrap();
        if files_done > entry.files {
            let new = files_done - entry.files;
            metrics::counter!("copyd_files_transferred_total").increment(new);
            totals.files += new;
            entry.files = files_done;
        }
        for (engine, bytes) in &engine_bytes {
            let before = entry.engine_bytes.get(engine).copied().unwrap_or(0);
            if *bytes > before {
                let new = bytes - before;
                metrics::counter!("copyd_bytes_transferred_total", "engine" => *engine)
                    .increment(new);
                totals.bytes += new;
                totals.engines.entry(engine.to_string()).or_default().bytes += new;
                entry.engine_bytes.insert(engine, *bytes);
            }
        }
        for (engine, operations) in job.progress.engine_operations() {
            let before = entry.engine_operations.get(engine).copied().unwrap_or(0);
            if operations > before {
                metrics::counter!("copyd_engine_operations_total", "engine" => engine)
                    .increment(operations - before);
                totals
                    .engines
                    .entry(engine.to_string())
                    .or_default()
                    .operations += operations - before;
                entry.engine_operations.insert(engine, operations);
            }
        }
        let retries = job.progress.retries();
        if retries > entry.retries {
            metrics::counter!("copyd_retries_total").increment(retries - entry.retries);
            entry.retries = retries;
        }
        let status = job.status();
        if status.failures.len() > entry.failures {
            let new = status.failures.len() - entry.failures;
            let mismatches = status.failures[entry.failures..]
                .iter()
                .filter(|failed| failed.kind == copyd_engine::ErrorKind::ChecksumMismatch)
                .count();
            metrics::counter!("copyd_verify_mismatches_total").increment(mismatches as u64);
            metrics::counter!("copyd_errors_total", "kind" => "file").increment(new as u64);
            for _ in 0..new {
                totals.errors.push_back(Instant::now());
            }
            entry.failures = status.failures.len();
        }
        let queue_wait = status.start_time.saturating_sub(job.created_us()) as f64 / 1e6;
        if matches!(update.event, JobEvent::State(JobState::Running)) && !entry.queue_wait_counted {
            entry.queue_wait_counted = true;
            metrics::histogram!("copyd_queue_wait_seconds").record(queue_wait);
            totals.queue_waits.push_back(queue_wait);
            if totals.queue_waits.len() > RECENT_JOBS {
                totals.queue_waits.pop_front();
            }
        }
        if update.event != JobEvent::Finished {
            return;
        }
        let state = status.state.name();
        let operation = job.operation.name();
        metrics::counter!("copyd_jobs_total", "operation" => operation, "state" => state)
            .increment(1);
        *totals
            .jobs
            .entry((operation.to_owned(), state.to_owned()))
            .or_default() += 1;
        let duration = if status.start_time > 0 {
            status.end_time.saturating_sub(status.start_time) as f64 / 1e6
        } else {
            0.0
        };
        metrics::histogram!("copyd_job_duration_seconds").record(duration);
        if let Some(err) = &status.error {
            if err.kind == copyd_engine::ErrorKind::ChecksumMismatch {
                metrics::counter!("copyd_verify_mismatches_total").increment(1);
            }
            if err.kind != copyd_engine::ErrorKind::Cancelled {
                metrics::counter!("copyd_errors_total", "kind" => err.kind.name()).increment(1);
                totals.errors.push_back(Instant::now());
            }
        }
        let job_bytes: u64 = engine_bytes.values().sum();
        for (engine, bytes) in &engine_bytes {
            let engine = totals.engines.entry(engine.to_string()).or_default();
            if job_bytes > 0 {
                engine.seconds += duration * (*bytes as f64 / job_bytes as f64);
            }
        }
        let summary = JobSummary {
            id: job.id.clone(),
            operation,
            state,
            bytes: job_bytes,
            files: files_done,
            duration_seconds: duration,
            queue_wait_seconds: if entry.queue_wait_counted {
                queue_wait
            } else {
                0.0
            },
            main_engine: job.progress.main_engine().unwrap_or("").to_owned(),
        };
        totals.recent.push_back(summary);
        if totals.recent.len() > RECENT_JOBS {
            totals.recent.pop_front();
        }
        seen.remove(&update.job_id);
    }

    /// Jobs and files that failed in the last [`ERROR_WINDOW`], per minute.
    pub fn errors_per_minute(&self) -> f64 {
        let mut totals = self.totals.lock().unwrap();
        let now = Instant::now();
        while totals
            .errors
            .front()
            .is_some_and(|t| now.duration_since(*t) > ERROR_WINDOW)
        {
            totals.errors.pop_front();
        }
        totals.errors.len() as f64 / (ERROR_WINDOW.as_secs_f64() / 60.0)
    }

    /// The performance report: per engine, queue waits, the jobs by
    /// outcome and the slowest recent jobs.
    pub fn report(&self) -> serde_json::Value {
        let totals = self.totals.lock().unwrap();
        let engines: serde_json::Map<_, _> = totals
            .engines
            .iter()
            .map(|(name, e)| {
                let throughput = if e.seconds > 0.0 {
                    e.bytes as f64 / e.seconds
                } else {
                    0.0
                };
                (
                    name.clone(),
                    serde_json::json!({
                        "bytes": e.bytes,
                        "operations": e.operations,
                        "throughput_bytes_per_second": throughput,
                    }),
                )
            })
            .collect();
        let mut waits: Vec<f64> = totals.queue_waits.iter().copied().collect();
        waits.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            if waits.is_empty() {
                0.0
            } else {
                waits[((waits.len() - 1) as f64 * q).round() as usize]
            }
        };
        let mut slowest: Vec<JobSummary> = totals.recent.iter().cloned().collect();
        slowest.sort_by(|a, b| b.duration_seconds.total_cmp(&a.duration_seconds));
        slowest.truncate(5);
        let auto_choices: BTreeMap<&str, u64> =
            totals.recent.iter().fold(BTreeMap::new(), |mut map, job| {
                if !job.main_engine.is_empty() {
                    *map.entry(job.main_engine.as_str()).or_default() += 1;
                }
                map
            });
        serde_json::json!({
            "uptime_seconds": self.uptime().as_secs(),
            "bytes": totals.bytes,
            "files": totals.files,
            "engines": engines,
            "jobs": totals.jobs.iter().map(|((op, state), n)| serde_json::json!({"operation": op, "state": state, "count": n})).collect::<Vec<_>>(),
            "queue_wait_seconds": {
                "samples": waits.len(),
                "median": quantile(0.5),
                "p90": quantile(0.9),
                "max": waits.last().copied().unwrap_or(0.0),
            },
            "engine_choices_recent": auto_choices,
            "recent_jobs": totals.recent.len(),
            "slowest_recent_jobs": slowest,
            "events_missed": totals.events_missed,
        })
    }
}
