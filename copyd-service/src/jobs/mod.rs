//! Jobs: their state, the queue that limits how many run at once, and the
//! task that runs each one on a worker thread and samples its progress.
//!
//! This layer knows nothing of D-Bus either: it reports [`JobEvent`]s on
//! one broadcast stream ([`events`]), which the bus layer turns into signals
//! and the metrics into counters.

pub mod events;
pub mod history;
mod persist;
mod rate;
pub mod scheduler;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use copyd_engine::{
    Control, EngineError, EngineSet, ErrorKind, FileIdentity, Journal, Operation, Progress,
    ProgressSnapshot, RateLimiter, Resolved, ResumeState, RunState,
};
use tokio::sync::{broadcast, Notify};

use crate::caller::Caller;
use crate::config::Config;
use events::{EventSink, JobUpdate};
use rate::RateWindow;
use scheduler::{Scheduler, Slot, Ticket};
use store::{CallerRecord, CountsRecord, JobRecord, LogEntry, ProgressLog, Store};

/// How often a running job's progress is sampled and reported.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// How often a running job's counts are appended to its progress log.
const COUNTS_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Paused,
    /// Was running when copyd stopped; waits for Resume (or auto_resume).
    Interrupted,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn parse(name: &str) -> Option<JobState> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Paused,
            JobState::Interrupted,
            JobState::Completed,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|state| state.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Interrupted => "interrupted",
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
    /// The job waits on the owner's answer to a conflict (on-conflict ask).
    ConflictRaised(copyd_engine::ConflictQuestion),
    /// Files placed (or moved sources removed) since the last such event,
    /// in order; only for a job asked to report them (report-files).
    FilesPlaced(Arc<Vec<copyd_engine::PlacedFile>>),
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
    /// Source files that could not be copied, with why.
    pub failures: Arc<Vec<FailedFile>>,
    /// The digest of each file copied and checked (verify), by its copy's
    /// path. Shared: a tree's can be many, and Status is copied often.
    pub checksums: Arc<Vec<copyd_engine::Checksum>>,
    started: bool,
    /// A runner task is carrying this job (from start until finish).
    runner_active: bool,
}

/// A file the job could not copy while the rest went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedFile {
    pub source: PathBuf,
    /// The path its copy would have had.
    pub target: PathBuf,
    pub kind: ErrorKind,
    pub message: String,
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
    resolved: Resolved,
    /// Higher runs first.
    pub priority: i32,
    ticket: Ticket,
    /// The disks the job reads and writes (see scheduler).
    disks: Vec<String>,
    /// Items finished, durable and under their final names.
    items_done: Mutex<BTreeSet<usize>>,
    /// What an earlier run left durable, for the next run to carry on from.
    resume: Mutex<ResumeState>,
    created_us: u64,
    /// What the job's temporary names are made from: its id and a random
    /// part, drawn when the job is made and kept in its checkpoint. Ids
    /// restart at 1 in every private copyd, and two copyds may build in
    /// one directory: the random part keeps their names apart.
    temp_tag: String,
    /// The job's own limit in bytes per second (the rate-limit option, or
    /// what SetRateLimit set since): what its checkpoint keeps and each run
    /// starts with. The engine sets the control's limit from the options
    /// it is given, so the options must carry this.
    rate_limit: AtomicU64,
    /// The counts its checkpoint (or end line) kept, shown until the job
    /// runs in this copyd: `progress` counts only what this copyd did.
    recorded_counts: Mutex<ProgressSnapshot>,
    /// Tells a finished job's bus task to take it off the bus now, before
    /// its retention time is up (see JobManager::retain_finished).
    leave: Notify,
}

/// What a job was made with, kept across restarts by its checkpoint.
struct Origin {
    created_us: u64,
    priority: i32,
    temp_tag: String,
}

/// A new job's temporary-name tag: `<id>-<16 random hex digits>`.
fn new_temp_tag(id_number: u64) -> String {
    let mut random = [0u8; 8];
    if let Err(err) = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty()) {
        // Only a kernel older than 3.17 lacks getrandom; the time then
        // still separates copyds started apart.
        tracing::warn!(%err, "getrandom failed: the temporary names use the time instead");
        random = now_us().to_le_bytes();
    }
    format!("{id_number}-{:016x}", u64::from_le_bytes(random))
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Job {
    /// The job's id as checkpoints and progress logs are named by it.
    fn number(&self) -> u64 {
        self.id.parse().expect("ids are numbers")
    }

    pub fn status(&self) -> Status {
        self.status.lock().unwrap().clone()
    }

    pub fn state(&self) -> JobState {
        self.status.lock().unwrap().state
    }

    /// When the job was made, µs since the epoch.
    pub fn created_us(&self) -> u64 {
        self.created_us
    }

    /// Whether a runner task still carries this job.
    pub fn is_being_run(&self) -> bool {
        self.status.lock().unwrap().runner_active
    }

    fn set_state(&self, state: JobState, events: &EventSink) {
        let mut status = self.status.lock().unwrap();
        if status.state == state {
            return;
        }
        status.state = state;
        drop(status);
        events.send(JobEvent::State(state));
    }

    /// Holds the job at its next chunk boundary (or in the queue).
    fn pause(&self, events: &EventSink) -> Result<(), EngineError> {
        self.refuse_if_finished("pause")?;
        if self.state() == JobState::Interrupted {
            return Err(EngineError::invalid(format!(
                "job {} is interrupted: resume or cancel it",
                self.id
            )));
        }
        self.control.pause();
        self.set_state(JobState::Paused, events);
        self.wake.notify_one();
        Ok(())
    }

    /// Lets a paused job go on. True if the job was interrupted and needs
    /// its runner started.
    fn resume(&self, events: &EventSink) -> Result<bool, EngineError> {
        self.refuse_if_finished("resume")?;
        if self.state() == JobState::Interrupted {
            self.control.resume();
            self.set_state(JobState::Queued, events);
            return Ok(true);
        }
        if self.state() == JobState::Paused {
            let started = self.status.lock().unwrap().started;
            if !started {
                // Its runner waits in the queue and takes it from here.
                self.control.resume();
            }
            // A started job's runner first gets a slot again, then lets its
            // worker go on (see sample_until_done).
            self.set_state(JobState::Queued, events);
            self.wake.notify_one();
        }
        Ok(false)
    }

    /// Cancels the job. True if nothing runs it (an interrupted job), so the
    /// caller must finish it itself.
    pub fn cancel(&self) -> Result<bool, EngineError> {
        self.refuse_if_finished("cancel")?;
        self.control.cancel();
        self.wake.notify_one();
        Ok(self.state() == JobState::Interrupted)
    }

    /// The request as the runner should carry it out: items already done
    /// (before a restart) are left alone.
    fn resolved_for_run(&self) -> Resolved {
        let done = self.items_done.lock().unwrap();
        let mut resolved = self.resolved.clone();
        resolved.request.options.rate_limit = self.rate_limit();
        for index in done.iter() {
            if let Some(item) = resolved.items.get_mut(*index) {
                item.skip = true;
            }
        }
        resolved
    }

    /// The job's bytes and files, done and in all. A job that has not run
    /// in this copyd shows what its record kept; once it runs, what the run
    /// counts (a resumed run counts again what it finds in place).
    pub fn counts(&self) -> ProgressSnapshot {
        if self.status.lock().unwrap().started {
            self.progress.snapshot()
        } else {
            self.recorded_counts.lock().unwrap().clone()
        }
    }

    /// Resolves when the job is to leave the bus before its retention time
    /// is up: too many finished jobs are kept.
    pub async fn told_to_leave(&self) {
        self.leave.notified().await
    }

    /// The job's own rate limit in bytes per second (0: none).
    pub fn rate_limit(&self) -> u64 {
        self.rate_limit.load(Ordering::Relaxed)
    }

    /// The options the job was made with.
    pub fn options(&self) -> &copyd_engine::Options {
        &self.resolved.request.options
    }

    /// How the job checks its copies (the `verify` option).
    pub fn verify(&self) -> copyd_engine::Verify {
        self.resolved.request.options.verify
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

/// Whether jobs are checkpointed to disk.
pub enum Persistence {
    /// Checkpoints go to this store.
    Enabled(Store),
    /// Not wanted (a private copyd lives and dies with its one client).
    Disabled,
    /// Wanted but impossible: why. Reported in Health.
    Unavailable(String),
}

/// All jobs of this daemon and the slots they run in.
pub struct JobManager {
    /// The configuration in use; a reload swaps it (see [`Self::reload`]).
    config: std::sync::RwLock<Arc<Config>>,
    pub engines: Arc<EngineSet>,
    persistence: Persistence,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    /// The finished jobs still kept, as (end time, id): oldest end first,
    /// the first to go when more than job_retention_count are.
    finished: Mutex<BTreeSet<(u64, u64)>>,
    next_id: AtomicU64,
    scheduler: Scheduler,
    global_limit: Arc<RateLimiter>,
    /// How fast recent jobs went, for the dry run's estimates.
    pub recent_rates: history::RecentRates,
    /// Every job's events (see [`events`]).
    events: broadcast::Sender<JobUpdate>,
}

impl JobManager {
    pub fn new(config: Config, engines: EngineSet, persistence: Persistence) -> Arc<Self> {
        Arc::new(JobManager {
            scheduler: Scheduler::new(
                config.max_concurrent_jobs as usize,
                config.serialize_per_disk,
            ),
            global_limit: Arc::new(RateLimiter::new(config.rate_limit)),
            recent_rates: history::RecentRates::default(),
            config: std::sync::RwLock::new(Arc::new(config)),
            engines: Arc::new(engines),
            persistence,
            jobs: Mutex::new(BTreeMap::new()),
            finished: Mutex::new(BTreeSet::new()),
            next_id: AtomicU64::new(1),
            events: broadcast::channel(events::CAPACITY).0,
        })
    }

    /// The alert thresholds in use.
    pub fn alert_thresholds(&self) -> crate::alerts::Thresholds {
        let m = &self.config().monitoring;
        crate::alerts::Thresholds {
            stall_seconds: m.stall_seconds,
            error_rate_per_minute: f64::from(m.error_rate_per_minute),
            disk_full_percent: f64::from(m.disk_full_percent),
        }
    }

    /// The configuration in use now.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    /// Puts `new` in use where it can change while copyd runs: the job
    /// limit, the global rate limit, the [security] rules, job retention,
    /// alert thresholds and the log level (the caller sets that). Running
    /// jobs keep going. What cannot change without a restart (the state
    /// directory, engines, the metrics listener, the audit log, disk
    /// serialization) keeps its value, and each such key that differs is
    /// returned, to be reported.
    pub fn reload(&self, mut new: Config) -> Vec<&'static str> {
        let old = self.config();
        let mut kept = Vec::new();
        macro_rules! keep {
            ($($field:ident).+, $name:literal) => {
                if new.$($field).+ != old.$($field).+ {
                    kept.push($name);
                    new.$($field).+ = old.$($field).+.clone();
                }
            };
        }
        keep!(state_dir, "checkpoint_dir");
        keep!(engine, "[performance]/[engine]");
        keep!(monitoring.enable_metrics, "enable_metrics");
        keep!(monitoring.metrics_port, "metrics_port");
        keep!(monitoring.metrics_address, "metrics_address");
        keep!(audit_log, "audit_log");
        keep!(serialize_per_disk, "serialize_per_disk");
        keep!(run_without_checkpoints, "run_without_checkpoints");
        self.scheduler
            .set_max_running(new.max_concurrent_jobs as usize);
        if new.rate_limit != old.rate_limit {
            self.global_limit.set_rate(new.rate_limit);
        }
        *self.config.write().unwrap() = Arc::new(new);
        kept
    }

    /// Every job's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobUpdate> {
        self.events.subscribe()
    }

    /// Where `job` reports.
    fn sink(&self, job: &Job) -> EventSink {
        EventSink::new(&job.id, self.events.clone())
    }

    /// The limit over all jobs, in bytes per second (0: none).
    pub fn global_rate_limit(&self) -> u64 {
        self.global_limit.rate()
    }

    pub fn set_global_rate_limit(&self, bytes_per_second: u64) {
        self.global_limit.set_rate(bytes_per_second);
    }

    /// Whether jobs are checkpointed (and so can be carried on later).
    pub fn is_persistent(&self) -> bool {
        matches!(self.persistence, Persistence::Enabled(_))
    }

    /// "ok", or "degraded: why".
    pub fn health(&self) -> String {
        match &self.persistence {
            Persistence::Unavailable(why) if self.config().run_without_checkpoints => {
                format!("degraded: {why}; jobs run without checkpoints")
            }
            Persistence::Unavailable(why) => {
                format!("degraded: {why}; new jobs are refused (run_without_checkpoints is off)")
            }
            _ => "ok".into(),
        }
    }

    /// Writes `job`'s checkpoint. A failure to write is logged, not fatal:
    /// the copy itself stays correct, only its resumability suffers.
    fn persist(&self, job: &Job) {
        let Persistence::Enabled(store) = &self.persistence else {
            return;
        };
        let status = job.status();
        let request = &job.resolved.request;
        let mut options = persist::options_record(&request.options);
        options.rate_limit = job.rate_limit();
        let record = JobRecord {
            id: job.number(),
            operation: job.operation.name().to_owned(),
            caller: CallerRecord {
                uid: job.caller.uid,
                pid: job.caller.pid,
                gids: job.caller.gids.clone(),
                privileged: job.caller.is_privileged(),
            },
            sources: request.sources.iter().map(|p| persist::bytes(p)).collect(),
            destination: persist::bytes(&request.destination),
            options,
            items: persist::items_record(&job.resolved.items),
            state: status.state.name().to_owned(),
            items_done: job.items_done.lock().unwrap().iter().copied().collect(),
            priority: job.priority,
            created_us: job.created_us,
            start_time_us: status.start_time,
            end_time_us: status.end_time,
            error: status.error.as_ref().map(error_record),
            temp_tag: Some(job.temp_tag.clone()),
            counts: counts_record(&job.counts()),
        };
        match store.save(&record) {
            Ok(()) => {
                metrics::counter!("copyd_checkpoint_writes_total").increment(1);
                crate::alerts::checkpoint_written(true);
            }
            Err(err) => {
                metrics::counter!("copyd_checkpoint_failures_total").increment(1);
                crate::alerts::checkpoint_written(false);
                tracing::warn!(job = %job.id, %err, "could not write the job's checkpoint");
            }
        }
        self.log_counts(job, &record.counts);
    }

    /// Appends `job`'s counts to its progress log, not flushed (a killed
    /// copyd loses no line; only a power loss may). Recovery shows the
    /// last counts a job's log holds.
    fn log_counts(&self, job: &Job, counts: &CountsRecord) {
        let Persistence::Enabled(store) = &self.persistence else {
            return;
        };
        let entry = LogEntry::Counts { counts: *counts };
        let appended = store
            .open_log(job.number())
            .and_then(|log| log.append(&entry, false));
        if let Err(err) = appended {
            tracing::warn!(job = %job.id, %err, "could not record the job's counts");
        }
    }

    /// Records that `job` ended, durably: one line in its progress log
    /// rather than a rewritten checkpoint (a new file, a rename and a
    /// directory fsync on every job's way out). Recovery reads the line over
    /// the checkpoint.
    fn persist_end(&self, job: &Job) {
        let Persistence::Enabled(store) = &self.persistence else {
            return;
        };
        let status = job.status();
        let entry = LogEntry::Ended {
            state: status.state.name().to_owned(),
            start_time_us: status.start_time,
            end_time_us: status.end_time,
            error: status.error.as_ref().map(error_record),
            counts: Some(counts_record(&job.counts())),
        };
        let ended = store
            .open_log(job.number())
            .and_then(|log| log.append(&entry, true));
        if let Err(err) = ended {
            tracing::warn!(job = %job.id, %err, "could not record the job's end");
        }
    }

    /// Forgets a job's checkpoint (it has left the bus).
    fn unpersist(&self, id: u64) {
        if let Persistence::Enabled(store) = &self.persistence {
            if let Err(err) = store.remove(id) {
                tracing::warn!(job = id, %err, "could not remove the job's checkpoint");
            }
        }
    }

    fn new_job(
        &self,
        id_number: u64,
        resolved: Resolved,
        caller: Caller,
        state: JobState,
        origin: Origin,
    ) -> Arc<Job> {
        let Origin {
            created_us,
            priority,
            temp_tag,
        } = origin;
        let disks = scheduler::disks_of(resolved.items.iter().flat_map(|item| {
            let target_dir = item.target.parent().unwrap_or(std::path::Path::new("/"));
            [item.source.as_path(), target_dir]
        }));
        let rate_limit = AtomicU64::new(resolved.request.options.rate_limit);
        let run_state = match state {
            JobState::Paused => RunState::Paused,
            s if s.is_finished() => RunState::Cancelled,
            _ => RunState::Running,
        };
        let job = Arc::new(Job {
            id: id_number.to_string(),
            operation: resolved.request.operation,
            sources: resolved.request.sources.clone(),
            destination: resolved.request.destination.clone(),
            caller,
            progress: Arc::new(Progress::new()),
            control: Arc::new(Control::new(run_state, Some(self.global_limit.clone()))),
            status: Mutex::new(Status {
                state,
                start_time: 0,
                end_time: 0,
                last_report: ProgressReport::default(),
                error: None,
                failures: Arc::default(),
                checksums: Arc::default(),
                started: false,
                runner_active: false,
            }),
            wake: Notify::new(),
            resolved,
            priority,
            ticket: Ticket::new(priority, id_number),
            disks,
            items_done: Mutex::new(BTreeSet::new()),
            resume: Mutex::new(ResumeState::default()),
            created_us,
            temp_tag,
            rate_limit,
            recorded_counts: Mutex::new(ProgressSnapshot::default()),
            leave: Notify::new(),
        });
        self.jobs.lock().unwrap().insert(id_number, job.clone());
        job
    }

    /// Makes a job of `resolved` (resolved with the caller's rights: what
    /// the caller cannot see does not exist for its job), not yet started.
    /// Bad input fails here, before anything exists.
    pub fn create(
        &self,
        resolved: Resolved,
        caller: Caller,
        start_paused: bool,
        priority: i32,
    ) -> Result<Arc<Job>, EngineError> {
        if let Persistence::Unavailable(why) = &self.persistence {
            if !self.config().run_without_checkpoints {
                return Err(EngineError::new(
                    ErrorKind::Failed,
                    format!(
                        "checkpoints are unavailable ({why}) and run_without_checkpoints is off"
                    ),
                ));
            }
        }
        // An unusable engine is refused now, not when the job runs.
        self.engines.select(&resolved.request.options.engine)?;
        let id_number = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = if start_paused {
            JobState::Paused
        } else {
            JobState::Queued
        };
        let origin = Origin {
            created_us: now_us(),
            priority,
            temp_tag: new_temp_tag(id_number),
        };
        let job = self.new_job(id_number, resolved, caller, state, origin);
        self.persist(&job);
        Ok(job)
    }

    /// Reloads the jobs checkpointed by an earlier run. Jobs that were
    /// queued or running come back interrupted; finished ones come back as
    /// they ended, to be listed until their retention ends.
    pub fn recover(&self) -> Vec<Arc<Job>> {
        let Persistence::Enabled(store) = &self.persistence else {
            return Vec::new();
        };
        let (records, rejected) = store.load_all();
        for bad in &rejected {
            tracing::error!(file = %bad.file.display(), reason = %bad.reason, "checkpoint set aside");
        }
        let mut recovered = Vec::new();
        for mut record in records {
            let log = store.read_log(record.id);
            if let Some(LogEntry::Ended {
                state,
                start_time_us,
                end_time_us,
                error,
                counts,
            }) = log
                .iter()
                .rfind(|entry| matches!(entry, LogEntry::Ended { .. }))
            {
                record.state = state.clone();
                record.start_time_us = *start_time_us;
                record.end_time_us = *end_time_us;
                record.error = error.clone();
                record.counts = counts.unwrap_or(record.counts);
            }
            // The last counts the log kept: newer than the checkpoint's
            // (every checkpoint write appends them too), and what a job
            // killed mid-run had reached.
            if let Some(counts) = log.iter().rev().find_map(|entry| match entry {
                LogEntry::Counts { counts } => Some(*counts),
                LogEntry::Ended {
                    counts: Some(counts),
                    ..
                } => Some(*counts),
                _ => None,
            }) {
                record.counts = counts;
            }
            let resolved = match persist::resolved(
                &record.operation,
                &record.sources,
                &record.destination,
                &record.options,
                &record.items,
            ) {
                Ok(resolved) => resolved,
                Err(reason) => {
                    tracing::error!(job = record.id, %reason, "checkpoint not usable");
                    continue;
                }
            };
            let state = match JobState::parse(&record.state) {
                Some(state) if state.is_finished() || state == JobState::Paused => state,
                _ => JobState::Interrupted,
            };
            let caller = Caller::recovered(
                record.caller.uid,
                record.caller.gids.clone(),
                record.caller.pid,
                record.caller.privileged,
            );
            let job = self.new_job(
                record.id,
                resolved,
                caller,
                state,
                Origin {
                    created_us: record.created_us,
                    priority: record.priority,
                    temp_tag: (record.temp_tag.clone()).unwrap_or_else(|| record.id.to_string()),
                },
            );
            {
                let mut status = job.status.lock().unwrap();
                status.start_time = record.start_time_us;
                status.end_time = record.end_time_us;
                status.error = record
                    .error
                    .as_ref()
                    .map(|(kind, message)| EngineError::new(error_kind(kind), message.clone()));
            }
            *job.recorded_counts.lock().unwrap() = ProgressSnapshot {
                bytes_done: record.counts.bytes_done,
                bytes_total: record.counts.bytes_total,
                files_done: record.counts.files_done,
                files_total: record.counts.files_total,
            };
            job.items_done
                .lock()
                .unwrap()
                .extend(record.items_done.iter().copied().chain(done_items(&log)));
            *job.resume.lock().unwrap() = resume_state(&log);
            self.next_id.fetch_max(record.id + 1, Ordering::Relaxed);
            tracing::info!(job = record.id, state = state.name(), "recovered job");
            recovered.push(job);
        }
        recovered
    }

    pub fn pause(&self, job: &Job) -> Result<(), EngineError> {
        job.pause(&self.sink(job))?;
        self.persist(job);
        Ok(())
    }

    pub fn resume(self: &Arc<Self>, job: &Arc<Job>) -> Result<(), EngineError> {
        let start = job.resume(&self.sink(job))?;
        self.persist(job);
        if start {
            // An interrupted job carried on: the closest copyd has to a retry.
            metrics::counter!("copyd_resumes_total").increment(1);
            self.start(job.clone());
        }
        Ok(())
    }

    /// Sets `job`'s own rate limit (0: none), now and for any later run of
    /// it: a queued, paused or interrupted job starts with it, and so does
    /// one carried on after a restart (it goes into the checkpoint).
    pub fn set_rate_limit(&self, job: &Job, bytes_per_second: u64) -> Result<(), EngineError> {
        job.refuse_if_finished("set the rate limit of")?;
        job.rate_limit.store(bytes_per_second, Ordering::Relaxed);
        job.control.set_rate_limit(bytes_per_second);
        self.persist(job);
        Ok(())
    }

    pub async fn cancel(self: &Arc<Self>, job: &Arc<Job>) -> Result<(), EngineError> {
        if job.cancel()? {
            // Nothing runs an interrupted job, so nothing else will remove
            // what its last run left under temporary names. The engine does
            // it, as the job's caller (the temporaries stand in directories
            // the caller chose), and only where they are provably the job's.
            let done = job.items_done.lock().unwrap().iter().copied().collect();
            let resume = job.resume.lock().unwrap().clone();
            let job_for_cleanup = job.clone();
            let cleanup = tokio::task::spawn_blocking(move || {
                let job = job_for_cleanup;
                job.caller.acting.run(|| {
                    copyd_engine::provenance::discard_leftovers(
                        &job.resolved,
                        &job.temp_tag,
                        &resume,
                        &done,
                    )
                })
            });
            match cleanup.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(job = %job.id, %err, "could not remove a temporary copy")
                }
                Err(err) => tracing::error!(job = %job.id, %err, "temporary cleanup panicked"),
            }
            self.finish(job, Err(EngineError::cancelled()), &self.sink(job));
        }
        Ok(())
    }

    /// Runs `job` in the background: it waits for a slot, copies on a worker
    /// thread, and reports on the event stream until `JobEvent::Finished`.
    pub fn start(self: &Arc<Self>, job: Arc<Job>) {
        job.status.lock().unwrap().runner_active = true;
        let events = self.sink(&job);
        let manager = self.clone();
        // Every line logged while the job runs carries its id (a JOB field
        // in the journal), including the engine's on the worker thread.
        let span = tracing::info_span!("job", job = %job.id);
        tokio::spawn(tracing::Instrument::instrument(
            async move { manager.run(job, events).await },
            span,
        ));
    }

    async fn run(self: Arc<Self>, job: Arc<Job>, events: EventSink) {
        let Some(slot) = self.wait_for_slot(&job).await else {
            self.finish(&job, Err(EngineError::cancelled()), &events);
            return;
        };
        {
            let mut status = job.status.lock().unwrap();
            status.started = true;
            status.start_time = now_us();
        }
        // No checkpoint here: recovery treats a queued and a running job
        // alike (both come back interrupted), so the queued checkpoint
        // already says all a crash needs; the job's end (or a pause, an
        // interruption) records the start time.
        job.set_state(JobState::Running, &events);
        let mut resolved = job.resolved_for_run();
        resolved.request.options.workers = self.config().engine.workers;
        job.control.set_retry_policy(self.config().engine.retry);
        let worker = {
            let (engines, job) = (self.engines.clone(), job.clone());
            let journal = JobJournal::open(&self, job.clone());
            let mut resume = std::mem::take(&mut *job.resume.lock().unwrap());
            resume.placed = job.items_done.lock().unwrap().iter().copied().collect();
            // The whole run happens on a thread with the caller's rights
            // (or as copyd for a privileged job): see caller::Acting.
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _in_job = span.enter();
                job.caller.acting.run(|| {
                    copyd_engine::run_resumable(
                        &resolved,
                        &engines,
                        &job.temp_tag,
                        &job.progress,
                        &job.control,
                        &resume,
                        &journal,
                    )
                })
            })
        };
        let result = self.sample_until_done(&job, worker, slot, &events).await;
        self.finish(&job, result, &events);
    }

    /// Waits in the queue; a paused job leaves the queue and waits without
    /// taking a slot. None if the job was cancelled while it waited.
    async fn wait_for_slot(&self, job: &Job) -> Option<Slot<'_>> {
        loop {
            match job.control.state() {
                RunState::Cancelled => {
                    self.scheduler.leave(job.ticket);
                    return None;
                }
                RunState::Paused => {
                    self.scheduler.leave(job.ticket);
                    job.wake.notified().await;
                }
                RunState::Running => {
                    let changed = self.scheduler.changed();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if let Some(slot) = self.scheduler.try_start(job.ticket, &job.disks) {
                        return Some(slot);
                    }
                    tokio::select! {
                        _ = changed => {}
                        _ = job.wake.notified() => {}
                    }
                }
            }
        }
    }

    /// Reports progress while the worker runs. A paused job gives its slot
    /// back (its worker thread stays parked, costing nothing but the thread)
    /// and, on Resume, queues for one again before its worker may go on.
    async fn sample_until_done<'s>(
        &'s self,
        job: &Job,
        mut worker: tokio::task::JoinHandle<Result<copyd_engine::Outcome, EngineError>>,
        slot: Slot<'s>,
        events: &EventSink,
    ) -> Result<copyd_engine::Outcome, EngineError> {
        let mut slot = Some(slot);
        let mut window = RateWindow::new();
        let mut last_counts = std::time::Instant::now();
        let mut last_question = 0;
        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                joined = &mut worker => {
                    return joined.unwrap_or_else(|panic| {
                        Err(EngineError::new(ErrorKind::Failed, format!("the copy worker crashed: {panic}")))
                    });
                }
                _ = ticker.tick() => {
                    if let Some(question) = job.control.pending_question() {
                        if question.id != last_question {
                            last_question = question.id;
                            events.send(JobEvent::ConflictRaised(question));
                        }
                    }
                    if last_counts.elapsed() >= COUNTS_INTERVAL {
                        last_counts = std::time::Instant::now();
                        self.log_counts(job, &counts_record(&job.counts()));
                    }
                    // The engine sets the control's limit from the options
                    // when its run starts: a SetRateLimit between
                    // resolved_for_run and then is undone there, and redone
                    // here, within a tick.
                    if job.control.rate_limit() != job.rate_limit() {
                        job.control.set_rate_limit(job.rate_limit());
                    }
                    self.report(job, &mut window, events)
                }
                _ = job.wake.notified() => {}
            }
            match job.state() {
                // Dropping the slot frees it (and its disks) for others.
                JobState::Paused if slot.is_some() => slot = None,
                JobState::Queued if slot.is_none() => {
                    if let Some(again) = self.scheduler.try_start(job.ticket, &job.disks) {
                        slot = Some(again);
                        job.control.resume();
                        job.set_state(JobState::Running, events);
                    }
                }
                _ => {}
            }
        }
    }

    /// Samples the job's counters and sends them if they moved.
    fn report(&self, job: &Job, window: &mut RateWindow, events: &EventSink) {
        send_files_placed(job, events);
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
            events.send(JobEvent::Progress(report));
        }
    }

    /// Ends a job's run: its final state, checkpoint and signals. Only then
    /// does the job count as no longer being run (shutdown waits for that).
    fn finish(
        &self,
        job: &Job,
        result: Result<copyd_engine::Outcome, EngineError>,
        events: &EventSink,
    ) {
        self.record_end(job, result, events);
        job.status.lock().unwrap().runner_active = false;
    }

    fn record_end(
        &self,
        job: &Job,
        result: Result<copyd_engine::Outcome, EngineError>,
        events: &EventSink,
    ) {
        if job.control.is_interrupted() && result.is_err() {
            // copyd is stopping: the job is to be carried on at the next
            // start, so it ends nothing and announces nothing. A paused job
            // stays paused.
            if job.state() != JobState::Paused {
                job.set_state(JobState::Interrupted, events);
            }
            self.persist(job);
            return;
        }
        // Files that could not be copied while the rest went on make the
        // job a failure that lists them.
        let mut result = result;
        let checksums = match &mut result {
            Ok(outcome) => std::mem::take(&mut outcome.checksums),
            Err(_) => Vec::new(),
        };
        let (result, failures) = match result {
            Ok(outcome) if !outcome.failures.is_empty() => {
                let failures: Vec<_> = outcome
                    .failures
                    .into_iter()
                    .map(|failure| FailedFile {
                        source: failure.source,
                        target: failure.target,
                        kind: failure.error.kind,
                        message: failure.error.message,
                    })
                    .collect();
                let listed: Vec<_> = failures
                    .iter()
                    .take(5)
                    .map(|f| f.message.as_str())
                    .collect();
                let more = failures.len().saturating_sub(listed.len());
                let message = format!(
                    "{} file(s) could not be copied (see FailedFiles): {}{}",
                    failures.len(),
                    listed.join("; "),
                    if more > 0 {
                        format!("; and {more} more")
                    } else {
                        String::new()
                    }
                );
                (Err(EngineError::new(ErrorKind::Failed, message)), failures)
            }
            other => (other, Vec::new()),
        };
        let final_state = match &result {
            Ok(_) => JobState::Completed,
            Err(err) if err.kind == ErrorKind::Cancelled => JobState::Cancelled,
            Err(_) => JobState::Failed,
        };
        job.progress.set_current_path(std::path::Path::new(""));
        // Not the progress counters alone: an interrupted job cancelled
        // before it ran again has only its record's.
        let counts = job.counts();
        let report = {
            let mut status = job.status.lock().unwrap();
            status.end_time = now_us();
            status.error = result.err();
            status.failures = Arc::new(failures);
            status.checksums = Arc::new(checksums);
            status.last_report = ProgressReport {
                counts,
                rate: 0,
                expected_end_time: 0,
            };
            status.last_report.clone()
        };
        if final_state == JobState::Completed {
            let status = job.status();
            let micros = status.end_time.saturating_sub(status.start_time);
            self.recent_rates.note(report.counts.bytes_done, micros);
        }
        match &job.status().error {
            None => tracing::info!(job = %job.id, "job completed"),
            Some(err) => tracing::info!(job = %job.id, error = %err, "job ended without success"),
        }
        if final_state == JobState::Completed {
            job.items_done
                .lock()
                .unwrap()
                .extend(0..job.resolved.items.len());
        }
        // The last files, before anything says the job ended.
        send_files_placed(job, events);
        events.send(JobEvent::Progress(report));
        job.set_state(final_state, events);
        self.persist_end(job);
        events.send(JobEvent::Finished);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        let number: u64 = id.parse().ok()?;
        self.jobs.lock().unwrap().get(&number).cloned()
    }

    /// All jobs, oldest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().unwrap().values().cloned().collect()
    }

    /// Forgets a job that has left the bus, and its checkpoint.
    pub fn remove(&self, id: &str) {
        if let Ok(number) = id.parse::<u64>() {
            let removed = self.jobs.lock().unwrap().remove(&number);
            if let Some(job) = removed {
                let end = job.status().end_time;
                self.finished.lock().unwrap().remove(&(end, number));
            }
            self.unpersist(number);
        }
    }

    /// Counts `job` (finished) among those kept, and tells the oldest
    /// finished to leave while more than job_retention_count are: each
    /// finished job costs memory while it is listed, and a busy copyd
    /// finishes thousands within the retention time.
    pub fn retain_finished(&self, job: &Job) {
        let mut finished = self.finished.lock().unwrap();
        finished.insert((job.status().end_time, job.number()));
        let keep = usize::try_from(self.config().job_retention_count).unwrap_or(usize::MAX);
        if finished.len() <= keep {
            return;
        }
        let jobs = self.jobs.lock().unwrap();
        while finished.len() > keep {
            let Some((_, oldest)) = finished.pop_first() else {
                break;
            };
            // Its bus task removes it as its retention time would have.
            if let Some(oldest) = jobs.get(&oldest) {
                oldest.leave.notify_one();
            }
        }
    }

    /// (running or paused, waiting in the queue or interrupted), as the
    /// manager's ActiveJobs and QueuedJobs. A paused job is active whether
    /// or not it ever ran (start-paused): it waits for Resume, not for a
    /// slot, as the contract says.
    pub fn counts(&self) -> (u32, u32) {
        let jobs = self.jobs.lock().unwrap();
        let (mut active, mut queued) = (0, 0);
        for job in jobs.values() {
            match job.state() {
                JobState::Running | JobState::Paused => active += 1,
                JobState::Queued | JobState::Interrupted => queued += 1,
                _ => {}
            }
        }
        (active, queued)
    }
}

/// Sends the files the job placed since the last call, if any (a batch
/// per progress tick: a tree of thousands of files sends a few events, not
/// thousands).
fn send_files_placed(job: &Job, events: &EventSink) {
    let placed = job.progress.placed().take();
    if !placed.is_empty() {
        events.send(JobEvent::FilesPlaced(Arc::new(placed)));
    }
}

fn counts_record(counts: &ProgressSnapshot) -> CountsRecord {
    CountsRecord {
        bytes_done: counts.bytes_done,
        bytes_total: counts.bytes_total,
        files_done: counts.files_done,
        files_total: counts.files_total,
    }
}

/// A job's error as checkpoints and the progress log keep it: (D-Bus
/// error name suffix, message). [`error_kind`] reads the name back.
fn error_record(err: &EngineError) -> (String, String) {
    (err.kind.name().to_owned(), err.message.clone())
}

fn error_kind(name: &str) -> ErrorKind {
    ErrorKind::from_name(name).unwrap_or(ErrorKind::Failed)
}

/// The items the progress log says are in place.
fn done_items(log: &[LogEntry]) -> impl Iterator<Item = usize> + '_ {
    log.iter().filter_map(|entry| match entry {
        LogEntry::Done { item } => Some(*item),
        _ => None,
    })
}

/// Rebuilds what an interrupted run left durable from its progress log. A
/// `Started` entry voids what came before it for that item: the item's
/// temporary copy was begun afresh then.
fn resume_state(log: &[LogEntry]) -> ResumeState {
    let mut state = ResumeState {
        resuming: true,
        ..ResumeState::default()
    };
    for entry in log {
        match entry {
            LogEntry::Started { item } => {
                state.started.insert(*item);
                state.built.remove(item);
                state.durable_files.remove(item);
                state.offsets.retain(|(index, _), _| index != item);
            }
            LogEntry::Built { item, copy } => {
                state.built.insert(*item, *copy);
            }
            LogEntry::Durable { item, files } => {
                let durable = state.durable_files.entry(*item).or_default();
                durable.extend(files.iter().map(|f| persist::path(f)));
            }
            LogEntry::Offset {
                item,
                file,
                identity,
                offset,
            } => {
                state
                    .offsets
                    .insert((*item, persist::path(file)), (*identity, *offset));
            }
            LogEntry::Done { .. } | LogEntry::Ended { .. } | LogEntry::Counts { .. } => {}
        }
    }
    state
}

/// Where a running job's engine reports its progress: into the job's
/// progress log, which recovery reads beside the job's checkpoint. One
/// appended line per report, not a rewritten checkpoint: a job of many
/// items would otherwise rewrite (and flush) its whole record per item.
///
/// The engine calls it on threads that act as the job's caller, who may not
/// open copyd's state directory: so the log is opened when the run starts,
/// with copyd's rights, and written through the open file. Each report is
/// written (and, where recovery relies on it, durable) before the engine
/// goes on.
struct JobJournal {
    job: Arc<Job>,
    log: Option<ProgressLog>,
}

impl JobJournal {
    /// Must be called from a thread with copyd's own rights (the async
    /// runtime's): the log is opened here, and written through by the
    /// engine's threads, which act as the caller.
    fn open(manager: &JobManager, job: Arc<Job>) -> JobJournal {
        let log = match &manager.persistence {
            Persistence::Enabled(store) => match store.open_log(job.number()) {
                Ok(log) => Some(log),
                Err(err) => {
                    tracing::warn!(job = %job.id, %err, "could not open the progress log");
                    None
                }
            },
            _ => None,
        };
        JobJournal { job, log }
    }

    fn append(&self, entry: LogEntry, durable: bool) {
        self.append_all(&[entry], durable);
    }

    fn append_all(&self, entries: &[LogEntry], durable: bool) {
        if let Some(log) = &self.log {
            if let Err(err) = log.append_all(entries, durable) {
                tracing::warn!(job = %self.job.id, %err, "could not append to the progress log");
            }
        }
    }
}

impl Journal for JobJournal {
    fn is_kept(&self) -> bool {
        self.log.is_some()
    }

    fn item_started(&self, index: usize) {
        // Durable before the item's rename into place, or recovery would
        // not know the target there is its own copy. Without sync a power
        // loss may lose the copies anyway; a killed copyd loses no line.
        self.items_started(&[index]);
    }

    fn items_started(&self, indices: &[usize]) {
        // One flush, after the last line, makes every line before it durable.
        let durable = self.job.resolved.request.options.sync;
        let lines: Vec<LogEntry> = (indices.iter())
            .map(|&item| LogEntry::Started { item })
            .collect();
        self.append_all(&lines, durable);
    }

    fn items_built(&self, built: &[(usize, copyd_engine::CopyIdentity)]) {
        // Durable before the renames into place (with sync): recovery takes
        // a target for an item's copy only if it is the inode named here.
        let durable = self.job.resolved.request.options.sync;
        let lines: Vec<LogEntry> = (built.iter())
            .map(|&(item, copy)| LogEntry::Built { item, copy })
            .collect();
        self.append_all(&lines, durable);
    }

    fn item_done(&self, index: usize) {
        self.job.items_done.lock().unwrap().insert(index);
        // Not flushed: it only spares a later run from looking. Without it,
        // recovery still finds the item in place (its durable Started, no
        // temporary, the target there) and skips it.
        self.append(LogEntry::Done { item: index }, false);
    }

    fn items_done(&self, indices: &[usize]) {
        self.job.items_done.lock().unwrap().extend(indices);
        let lines: Vec<LogEntry> = (indices.iter())
            .map(|&item| LogEntry::Done { item })
            .collect();
        self.append_all(&lines, false);
    }

    fn files_durable(&self, index: usize, relatives: &[std::path::PathBuf]) {
        self.append(
            LogEntry::Durable {
                item: index,
                files: relatives.iter().map(|p| persist::bytes(p)).collect(),
            },
            true,
        );
    }

    fn file_offset(
        &self,
        index: usize,
        relative: &std::path::Path,
        identity: FileIdentity,
        offset: u64,
    ) {
        self.append(
            LogEntry::Offset {
                item: index,
                file: persist::bytes(relative),
                identity,
                offset,
            },
            true,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use copyd_engine::{Operation, Options, Request};

    fn manager(state: &std::path::Path) -> Arc<JobManager> {
        JobManager::new(
            Config::default(),
            EngineSet::probe(),
            Persistence::Enabled(Store::open(state).unwrap()),
        )
    }

    /// Makes a copy job of `files` small files (queued and checkpointed by
    /// a manager on `state`) and opens its progress log.
    fn queued_job_log(state: &std::path::Path, files: u8) -> ProgressLog {
        let work = state.with_file_name("work");
        std::fs::create_dir_all(work.join("dst")).unwrap();
        let sources = (0..files)
            .map(|i| {
                let path = work.join(format!("f{i}"));
                std::fs::write(&path, [i; 10]).unwrap();
                path
            })
            .collect();
        let uid = crate::caller::own_uid();
        let request = Request {
            operation: Operation::Copy,
            sources,
            destination: work.join("dst"),
            options: Options::default(),
        };
        let caller = Caller::recovered(uid, vec![uid], None, false);
        let resolved = copyd_engine::resolve(request).unwrap();
        let job = manager(state).create(resolved, caller, false, 0).unwrap();
        Store::open(state).unwrap().open_log(job.number()).unwrap()
    }

    /// A job's end is a line in its progress log; recovery takes the job's
    /// state, times and error from it over the checkpoint's "queued".
    #[test]
    fn a_job_comes_back_as_its_end_line_says() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let log = queued_job_log(&state, 1);
        log.append(
            &LogEntry::Ended {
                state: "failed".into(),
                start_time_us: 10,
                end_time_us: 20,
                error: Some(("NoSpace".into(), "disk full".into())),
                counts: Some(CountsRecord {
                    bytes_done: 7,
                    bytes_total: 10,
                    files_done: 0,
                    files_total: 1,
                }),
            },
            true,
        )
        .unwrap();
        let recovered = manager(&state).recover();
        let [job] = &recovered[..] else {
            panic!("one job recovered, not {}", recovered.len())
        };
        let status = job.status();
        assert_eq!(status.state, JobState::Failed);
        assert_eq!((status.start_time, status.end_time), (10, 20));
        let counts = job.counts();
        assert_eq!((counts.bytes_done, counts.bytes_total), (7, 10));
        assert_eq!((counts.files_done, counts.files_total), (0, 1));
        let error = status.error.unwrap();
        assert_eq!(
            (error.kind, error.message.as_str()),
            (ErrorKind::NoSpace, "disk full")
        );
    }

    /// Items the progress log calls done come back done (a resumed run
    /// skips them), beside those of the checkpoint itself.
    #[test]
    fn items_done_in_the_log_are_skipped_after_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let log = queued_job_log(&state, 3);
        log.append(&LogEntry::Started { item: 1 }, true).unwrap();
        log.append(&LogEntry::Done { item: 1 }, false).unwrap();
        log.append(&LogEntry::Started { item: 2 }, true).unwrap();

        let recovered = manager(&state).recover();
        let [job] = &recovered[..] else {
            panic!("one job recovered, not {}", recovered.len())
        };
        assert_eq!(job.state(), JobState::Interrupted);
        let skipped: Vec<bool> = job
            .resolved_for_run()
            .items
            .iter()
            .map(|i| i.skip)
            .collect();
        assert_eq!(skipped, [false, true, false]);
        assert!(job.resume.lock().unwrap().started.contains(&2));
    }
}
