//! Jobs: their state, the queue that limits how many run at once, and the
//! task that runs each one on a worker thread and samples its progress.
//!
//! This layer knows nothing of D-Bus either: it reports through a channel of
//! [`JobEvent`]s, which the bus layer turns into signals.

mod rate;
pub mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use copyd_engine::{
    Control, EngineError, EngineSet, ErrorKind, Operation, Progress, ProgressSnapshot, RateLimiter,
    Request, Resolved, RunState,
};
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::caller::Caller;
use crate::config::Config;
use rate::RateWindow;

/// How often a running job's progress is sampled and reported.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

/// What changed about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    State(JobState),
    Progress(ProgressReport),
    /// The job ended; the last event it sends.
    Finished,
}

/// A progress sample with its derived rate and estimate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressReport {
    pub counts: ProgressSnapshot,
    pub rate: u64,
    pub expected_end_time: u64,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub state: JobState,
    /// µs since the epoch; 0 until it happens.
    pub start_time: u64,
    pub end_time: u64,
    pub last_report: ProgressReport,
    pub error: Option<EngineError>,
    started: bool,
}

pub struct Job {
    pub id: String,
    pub operation: Operation,
    pub sources: Vec<PathBuf>,
    pub destination: PathBuf,
    pub caller: Caller,
    pub progress: Arc<Progress>,
    pub control: Arc<Control>,
    status: Mutex<Status>,
    /// Wakes the runner of a job waiting in the queue.
    wake: Notify,
    resolved: Mutex<Option<Resolved>>,
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Job {
    pub fn status(&self) -> Status {
        self.status.lock().unwrap().clone()
    }

    pub fn state(&self) -> JobState {
        self.status.lock().unwrap().state
    }

    fn set_state(&self, state: JobState, events: &mpsc::UnboundedSender<JobEvent>) {
        let mut status = self.status.lock().unwrap();
        if status.state == state {
            return;
        }
        status.state = state;
        drop(status);
        let _ = events.send(JobEvent::State(state));
    }

    /// Holds the job at its next chunk boundary (or in the queue).
    pub fn pause(&self, events: &mpsc::UnboundedSender<JobEvent>) -> Result<(), EngineError> {
        self.refuse_if_finished("pause")?;
        self.control.pause();
        self.set_state(JobState::Paused, events);
        self.wake.notify_one();
        Ok(())
    }

    pub fn resume(&self, events: &mpsc::UnboundedSender<JobEvent>) -> Result<(), EngineError> {
        self.refuse_if_finished("resume")?;
        if self.control.resume() {
            let started = self.status.lock().unwrap().started;
            let state = if started {
                JobState::Running
            } else {
                JobState::Queued
            };
            self.set_state(state, events);
            self.wake.notify_one();
        }
        Ok(())
    }

    pub fn cancel(&self) -> Result<(), EngineError> {
        self.refuse_if_finished("cancel")?;
        self.control.cancel();
        self.wake.notify_one();
        Ok(())
    }

    fn refuse_if_finished(&self, what: &str) -> Result<(), EngineError> {
        let state = self.state();
        if state.is_finished() {
            return Err(EngineError::invalid(format!(
                "cannot {what} job {}: it is already {}",
                self.id,
                state.name()
            )));
        }
        Ok(())
    }
}

/// All jobs of this daemon and the slots they run in.
pub struct JobManager {
    pub config: Config,
    pub engines: Arc<EngineSet>,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    next_id: AtomicU64,
    slots: Arc<Semaphore>,
    global_limit: Arc<RateLimiter>,
}

impl JobManager {
    pub fn new(config: Config, engines: EngineSet) -> Arc<Self> {
        Arc::new(JobManager {
            slots: Arc::new(Semaphore::new(config.max_concurrent_jobs as usize)),
            global_limit: Arc::new(RateLimiter::new(config.rate_limit)),
            config,
            engines: Arc::new(engines),
            jobs: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// Checks `request` and makes a job of it, not yet started. Bad input
    /// fails here, before anything exists.
    pub fn create(
        &self,
        request: Request,
        caller: Caller,
        start_paused: bool,
    ) -> Result<Arc<Job>, EngineError> {
        // An unusable engine is refused now, not when the job runs.
        self.engines.select(&request.options.engine)?;
        let resolved = copyd_engine::resolve(request)?;
        let id_number = self.next_id.fetch_add(1, Ordering::Relaxed);
        let initial = if start_paused {
            RunState::Paused
        } else {
            RunState::Running
        };
        let job = Arc::new(Job {
            id: id_number.to_string(),
            operation: resolved.request.operation,
            sources: resolved.request.sources.clone(),
            destination: resolved.request.destination.clone(),
            caller,
            progress: Arc::new(Progress::new()),
            control: Arc::new(Control::new(initial, Some(self.global_limit.clone()))),
            status: Mutex::new(Status {
                state: if start_paused {
                    JobState::Paused
                } else {
                    JobState::Queued
                },
                start_time: 0,
                end_time: 0,
                last_report: ProgressReport::default(),
                error: None,
                started: false,
            }),
            wake: Notify::new(),
            resolved: Mutex::new(Some(resolved)),
        });
        self.jobs.lock().unwrap().insert(id_number, job.clone());
        Ok(job)
    }

    /// Runs `job` in the background: it waits for a slot, copies on a worker
    /// thread, and reports through `events` until `JobEvent::Finished`.
    pub fn start(self: &Arc<Self>, job: Arc<Job>, events: mpsc::UnboundedSender<JobEvent>) {
        let manager = self.clone();
        tokio::spawn(async move { manager.run(job, events).await });
    }

    async fn run(self: Arc<Self>, job: Arc<Job>, events: mpsc::UnboundedSender<JobEvent>) {
        let Some(_slot) = self.wait_for_slot(&job).await else {
            self.finish(&job, Err(EngineError::cancelled()), &events);
            return;
        };
        {
            let mut status = job.status.lock().unwrap();
            status.started = true;
            status.start_time = now_us();
        }
        job.set_state(JobState::Running, &events);
        let resolved = job
            .resolved
            .lock()
            .unwrap()
            .take()
            .expect("a job runs once");
        let worker = {
            let (engines, job) = (self.engines.clone(), job.clone());
            tokio::task::spawn_blocking(move || {
                copyd_engine::run(&resolved, &engines, &job.id, &job.progress, &job.control)
            })
        };
        let result = self.sample_until_done(&job, worker, &events).await;
        self.finish(&job, result, &events);
    }

    /// Waits in the queue; a paused job waits without taking a slot. None if
    /// the job was cancelled while it waited.
    async fn wait_for_slot(&self, job: &Job) -> Option<tokio::sync::OwnedSemaphorePermit> {
        loop {
            match job.control.state() {
                RunState::Cancelled => return None,
                RunState::Paused => job.wake.notified().await,
                RunState::Running => {
                    tokio::select! {
                        permit = self.slots.clone().acquire_owned() => {
                            let permit = permit.expect("the slots are never closed");
                            if job.control.state() == RunState::Running {
                                return Some(permit);
                            }
                        }
                        _ = job.wake.notified() => {}
                    }
                }
            }
        }
    }

    async fn sample_until_done(
        &self,
        job: &Job,
        mut worker: tokio::task::JoinHandle<Result<copyd_engine::Outcome, EngineError>>,
        events: &mpsc::UnboundedSender<JobEvent>,
    ) -> Result<copyd_engine::Outcome, EngineError> {
        let mut window = RateWindow::new();
        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                joined = &mut worker => {
                    return joined.unwrap_or_else(|panic| {
                        Err(EngineError::new(ErrorKind::Failed, format!("the copy worker crashed: {panic}")))
                    });
                }
                _ = ticker.tick() => self.report(job, &mut window, events),
            }
        }
    }

    /// Samples the job's counters and sends them if they moved.
    fn report(&self, job: &Job, window: &mut RateWindow, events: &mpsc::UnboundedSender<JobEvent>) {
        let counts = job.progress.snapshot();
        let now = Instant::now();
        window.add(now, counts.bytes_done);
        let rate = window.rate();
        let expected_end_time = window
            .remaining_time(counts.bytes_total.saturating_sub(counts.bytes_done))
            .map_or(0, |left| now_us() + left.as_micros() as u64);
        let report = ProgressReport {
            counts,
            rate,
            expected_end_time,
        };
        let mut status = job.status.lock().unwrap();
        if status.last_report != report {
            status.last_report = report.clone();
            drop(status);
            let _ = events.send(JobEvent::Progress(report));
        }
    }

    fn finish(
        &self,
        job: &Job,
        result: Result<copyd_engine::Outcome, EngineError>,
        events: &mpsc::UnboundedSender<JobEvent>,
    ) {
        let final_state = match &result {
            Ok(_) => JobState::Completed,
            Err(err) if err.kind == ErrorKind::Cancelled => JobState::Cancelled,
            Err(_) => JobState::Failed,
        };
        job.progress.set_current_path(std::path::Path::new(""));
        let report = {
            let mut status = job.status.lock().unwrap();
            status.end_time = now_us();
            status.error = result.err();
            status.last_report = ProgressReport {
                counts: job.progress.snapshot(),
                rate: 0,
                expected_end_time: 0,
            };
            status.last_report.clone()
        };
        match &job.status().error {
            None => tracing::info!(job = %job.id, "job completed"),
            Some(err) => tracing::info!(job = %job.id, error = %err, "job ended without success"),
        }
        let _ = events.send(JobEvent::Progress(report));
        job.set_state(final_state, events);
        let _ = events.send(JobEvent::Finished);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        let number: u64 = id.parse().ok()?;
        self.jobs.lock().unwrap().get(&number).cloned()
    }

    /// All jobs, oldest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().unwrap().values().cloned().collect()
    }

    pub fn remove(&self, id: &str) {
        if let Ok(number) = id.parse::<u64>() {
            self.jobs.lock().unwrap().remove(&number);
        }
    }

    /// (running or paused after starting, waiting in the queue)
    pub fn counts(&self) -> (u32, u32) {
        let jobs = self.jobs.lock().unwrap();
        let (mut active, mut queued) = (0, 0);
        for job in jobs.values() {
            let status = job.status.lock().unwrap();
            match status.state {
                JobState::Running => active += 1,
                JobState::Paused if status.started => active += 1,
                JobState::Queued | JobState::Paused => queued += 1,
                _ => {}
            }
        }
        (active, queued)
    }
}
