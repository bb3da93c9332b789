//! Progress counters and run control shared between a transfer's worker
//! threads and whoever watches it.
//!
//! Workers bump atomic counters; observers sample them as often as they like
//! (the service does so a few times a second), so reporting costs the copy
//! loop nothing but a few relaxed atomic adds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::conflict::{ConflictAnswer, ConflictDecision, ConflictQuestion};
use crate::error::{EngineError, Result};
use crate::placed::FileReports;

/// Counters of one transfer. Counts only grow.
#[derive(Debug, Default)]
pub struct Progress {
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
    files_total: AtomicU64,
    files_done: AtomicU64,
    current_path: Mutex<PathBuf>,
    engine_bytes: Mutex<BTreeMap<&'static str, u64>>,
    /// Targets found taken, by what on-conflict did with them.
    conflicts: Mutex<BTreeMap<&'static str, u64>>,
    /// Transient errors tried again (see `retry`).
    retries: AtomicU64,
    /// Time spent reading copies back from their storage to verify them
    /// (not writing them out first), in nanoseconds.
    read_back_nanos: AtomicU64,
    /// Copy operations (a range one engine copied, a file of a batch), by
    /// engine.
    engine_operations: Mutex<BTreeMap<&'static str, u64>>,
    /// How bytes went between each pair of file systems.
    routes: Mutex<BTreeMap<(u64, u64), RouteReport>>,
    /// Each file placed, for a job whose owner asked (see `placed`).
    placed: FileReports,
}

/// How a job's bytes went from one file system to another (by device
/// numbers: source, copy): the engines that moved them and why those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteReport {
    pub files: u64,
    pub engine_bytes: BTreeMap<&'static str, u64>,
    /// Why, in words: each reason that applied to at least one file.
    pub why: std::collections::BTreeSet<&'static str>,
}

/// A consistent-enough copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub files_total: u64,
    pub files_done: u64,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// The per-file reports: gathered only once enabled.
    pub fn placed(&self) -> &FileReports {
        &self.placed
    }

    pub fn add_totals(&self, files: u64, bytes: u64) {
        self.files_total.fetch_add(files, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `n` bytes copied by `engine`.
    pub fn add_bytes(&self, engine: &'static str, n: u64) {
        // Release, with files_done's: see `snapshot`.
        self.bytes_done.fetch_add(n, Ordering::Release);
        *self.engine_bytes.lock().unwrap().entry(engine).or_default() += n;
    }

    /// Counts a transient error tried again.
    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one file's bytes between devices `devices` (source, copy),
    /// by engine, and why they went that way.
    pub fn note_route(
        &self,
        devices: (u64, u64),
        engine_bytes: impl IntoIterator<Item = (&'static str, u64)>,
        why: impl IntoIterator<Item = &'static str>,
    ) {
        let mut routes = self.routes.lock().unwrap();
        let route = routes.entry(devices).or_default();
        route.files += 1;
        for (engine, bytes) in engine_bytes {
            *route.engine_bytes.entry(engine).or_default() += bytes;
        }
        route.why.extend(why);
    }

    /// How bytes went so far, by (source device, copy device).
    pub fn routes(&self) -> BTreeMap<(u64, u64), RouteReport> {
        self.routes.lock().unwrap().clone()
    }

    /// Counts one copy operation by `engine`: a range it copied.
    pub fn add_engine_operation(&self, engine: &'static str) {
        *self
            .engine_operations
            .lock()
            .unwrap()
            .entry(engine)
            .or_default() += 1;
    }

    /// Copy operations so far, by engine.
    pub fn engine_operations(&self) -> BTreeMap<&'static str, u64> {
        self.engine_operations.lock().unwrap().clone()
    }

    /// Counts time spent reading a copy back to verify it.
    pub fn add_read_back_time(&self, took: Duration) {
        self.read_back_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Time spent reading copies back to verify them.
    pub fn read_back_time(&self) -> Duration {
        Duration::from_nanos(self.read_back_nanos.load(Ordering::Relaxed))
    }

    /// How many transient errors were tried again.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Counts a target found taken, and what was done with it.
    pub fn note_conflict(&self, decision: ConflictDecision) {
        *self
            .conflicts
            .lock()
            .unwrap()
            .entry(decision.name())
            .or_default() += 1;
    }

    /// Conflicts so far, by decision.
    pub fn conflicts(&self) -> BTreeMap<&'static str, u64> {
        self.conflicts.lock().unwrap().clone()
    }

    /// Counts bytes that were done without copying (a rename, a skipped file).
    pub fn add_bytes_uncopied(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Release);
    }

    /// Counts `n` files done; their bytes must have been counted before.
    pub fn add_files_done(&self, n: u64) {
        self.files_done.fetch_add(n, Ordering::Release);
    }

    pub fn set_current_path(&self, path: &Path) {
        let mut current = self.current_path.lock().unwrap();
        current.clear();
        current.push(path);
    }

    pub fn current_path(&self) -> PathBuf {
        self.current_path.lock().unwrap().clone()
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        // Read "done" before "total" so that done <= total holds for a
        // snapshot taken while totals still grow. Files before bytes, both
        // acquiring what the adds released: a file is counted after its
        // bytes, so a snapshot that counts a file counts its bytes too
        // (read the other way round, a file finishing in between showed
        // without them).
        let files_done = self.files_done.load(Ordering::Acquire);
        let bytes_done = self.bytes_done.load(Ordering::Acquire);
        ProgressSnapshot {
            bytes_done,
            files_done,
            bytes_total: self.bytes_total.load(Ordering::Relaxed).max(bytes_done),
            files_total: self.files_total.load(Ordering::Relaxed).max(files_done),
        }
    }

    /// Bytes moved by each engine so far.
    pub fn engine_bytes(&self) -> BTreeMap<&'static str, u64> {
        self.engine_bytes.lock().unwrap().clone()
    }

    /// The engine that moved the most bytes, if any moved.
    pub fn main_engine(&self) -> Option<&'static str> {
        self.engine_bytes
            .lock()
            .unwrap()
            .iter()
            .max_by_key(|(_, bytes)| **bytes)
            .map(|(name, _)| *name)
    }
}

/// Whether a transfer may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Cancelled,
}

/// Pause, resume, cancel and rate limit of one transfer. Workers call
/// [`Control::checkpoint`] and [`Control::throttle`] between chunks.
#[derive(Debug)]
pub struct Control {
    state: Mutex<RunState>,
    /// Stopped to be carried on later (copyd shutting down), not cancelled
    /// by a user: partial work stays for the resume.
    interrupted: std::sync::atomic::AtomicBool,
    changed: Condvar,
    job_limit: RateLimiter,
    global_limit: Option<Arc<RateLimiter>>,
    /// The conflict the transfer waits on (on-conflict ask), and its answer.
    asking: Mutex<Asking>,
    answered: Condvar,
    retry: Mutex<crate::retry::RetryPolicy>,
}

#[derive(Debug, Default)]
struct Asking {
    question: Option<ConflictQuestion>,
    answer: Option<ConflictAnswer>,
    asked: u64,
}

impl Default for Control {
    fn default() -> Self {
        Self::new(RunState::Running, None)
    }
}

impl Control {
    /// A control starting in `state`, limited by `global_limit` besides its own.
    pub fn new(state: RunState, global_limit: Option<Arc<RateLimiter>>) -> Self {
        Control {
            state: Mutex::new(state),
            interrupted: std::sync::atomic::AtomicBool::new(false),
            changed: Condvar::new(),
            job_limit: RateLimiter::new(0),
            global_limit,
            asking: Mutex::new(Asking::default()),
            answered: Condvar::new(),
            retry: Mutex::new(crate::retry::RetryPolicy::default()),
        }
    }

    pub fn state(&self) -> RunState {
        *self.state.lock().unwrap()
    }

    /// Pauses a running transfer; false if it was not running.
    pub fn pause(&self) -> bool {
        self.transition(RunState::Running, RunState::Paused)
    }

    /// Resumes a paused transfer; false if it was not paused.
    pub fn resume(&self) -> bool {
        self.transition(RunState::Paused, RunState::Running)
    }

    /// Cancels the transfer; false if it already was.
    pub fn cancel(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        let changed = *state != RunState::Cancelled;
        *state = RunState::Cancelled;
        self.changed.notify_all();
        changed
    }

    /// Stops the transfer like cancel, but keeps its partial work (temporary
    /// copies the journal knows of) for a later resume.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.cancel();
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    pub fn is_cancelled(&self) -> bool {
        self.state() == RunState::Cancelled
    }

    fn transition(&self, from: RunState, to: RunState) -> bool {
        let mut state = self.state.lock().unwrap();
        if *state != from {
            return false;
        }
        *state = to;
        self.changed.notify_all();
        true
    }

    /// Waits while paused; fails once cancelled.
    pub fn checkpoint(&self) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        loop {
            match *state {
                RunState::Running => return Ok(()),
                RunState::Cancelled => return Err(EngineError::cancelled()),
                RunState::Paused => state = self.changed.wait(state).unwrap(),
            }
        }
    }

    /// Waits until whoever steers the transfer answers a conflict about
    /// `target` ([`Self::pending_question`], [`Self::answer`]); fails once
    /// cancelled. Pausing and resuming meanwhile changes nothing.
    pub fn ask(
        &self,
        target: PathBuf,
        existing: crate::conflict::Side,
        incoming: crate::conflict::Side,
    ) -> Result<ConflictAnswer> {
        let mut asking = self.asking.lock().unwrap();
        asking.asked += 1;
        asking.question = Some(ConflictQuestion {
            id: asking.asked,
            target,
            existing,
            incoming,
        });
        asking.answer = None;
        loop {
            if let Some(answer) = asking.answer.take() {
                asking.question = None;
                return Ok(answer);
            }
            if self.is_cancelled() {
                asking.question = None;
                return Err(EngineError::cancelled());
            }
            // A cancel does not signal this condvar: look again soon.
            asking = self
                .answered
                .wait_timeout(asking, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    /// The conflict the transfer waits on, if it waits on one.
    pub fn pending_question(&self) -> Option<ConflictQuestion> {
        self.asking.lock().unwrap().question.clone()
    }

    /// Answers the pending conflict; false if none is pending.
    pub fn answer(&self, answer: ConflictAnswer) -> bool {
        let mut asking = self.asking.lock().unwrap();
        if asking.question.is_none() || asking.answer.is_some() {
            return false;
        }
        asking.answer = Some(answer);
        self.answered.notify_all();
        true
    }

    /// How transient errors are retried from now on.
    pub fn set_retry_policy(&self, policy: crate::retry::RetryPolicy) {
        *self.retry.lock().unwrap() = policy;
    }

    pub fn retry_policy(&self) -> crate::retry::RetryPolicy {
        *self.retry.lock().unwrap()
    }

    /// Sleeps for `wait`, or less if the job is cancelled meanwhile (then
    /// fails); a pause meanwhile is waited out after.
    pub fn sleep(&self, wait: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + wait;
        let mut state = self.state.lock().unwrap();
        loop {
            if *state == RunState::Cancelled {
                return Err(EngineError::cancelled());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            state = self.changed.wait_timeout(state, deadline - now).unwrap().0;
        }
        drop(state);
        self.checkpoint()
    }

    /// Sets this job's own limit in bytes per second (0: none).
    pub fn set_rate_limit(&self, bytes_per_second: u64) {
        self.job_limit.set_rate(bytes_per_second);
    }

    pub fn rate_limit(&self) -> u64 {
        self.job_limit.rate()
    }

    /// Accounts for `bytes` about to be (or just) moved and sleeps as long as
    /// the job's and the global limit require, waking early on cancel.
    pub fn throttle(&self, bytes: u64) -> Result<()> {
        let wait = self.job_limit.take(bytes).max(
            self.global_limit
                .as_ref()
                .map_or(Duration::ZERO, |global| global.take(bytes)),
        );
        if !wait.is_zero() {
            let state = self.state.lock().unwrap();
            let (state, _) = self
                .changed
                .wait_timeout_while(state, wait, |s| *s != RunState::Cancelled)
                .unwrap();
            drop(state);
        }
        self.checkpoint()
    }
}

/// A token bucket. Taking more tokens than there are puts the bucket in debt
/// and returns how long the caller must sleep for the debt to be repaid, so
/// the average rate over any window longer than the burst stays at the limit.
#[derive(Debug)]
pub struct RateLimiter {
    inner: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    rate: u64,
    tokens: f64,
    last: Instant,
}

/// How much a bucket may save up: a quarter second at full rate.
const BURST_SECONDS: f64 = 0.25;

impl RateLimiter {
    pub fn new(bytes_per_second: u64) -> Self {
        RateLimiter {
            inner: Mutex::new(Bucket {
                rate: bytes_per_second,
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    pub fn rate(&self) -> u64 {
        self.inner.lock().unwrap().rate
    }

    pub fn set_rate(&self, bytes_per_second: u64) {
        let mut bucket = self.inner.lock().unwrap();
        bucket.rate = bytes_per_second;
        bucket.tokens = bucket.tokens.min(0.0);
        bucket.last = Instant::now();
    }

    /// Takes `bytes` tokens; returns how long to wait before going on.
    pub fn take(&self, bytes: u64) -> Duration {
        let mut bucket = self.inner.lock().unwrap();
        if bucket.rate == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let rate = bucket.rate as f64;
        let refill = now.duration_since(bucket.last).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate * BURST_SECONDS);
        bucket.last = now;
        bucket.tokens -= bytes as f64;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_wakes_a_paused_worker() {
        let control = Arc::new(Control::default());
        assert!(control.pause());
        let worker = {
            let control = control.clone();
            std::thread::spawn(move || control.checkpoint())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!worker.is_finished(), "a paused worker must wait");
        control.cancel();
        let err = worker.join().unwrap().unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Cancelled);
    }

    #[test]
    fn token_bucket_debt_gives_the_wait_for_the_rate() {
        let limiter = RateLimiter::new(1_000_000);
        let wait = limiter.take(500_000);
        // Half a second of bytes at 1 MB/s, minus at most a few µs refilled.
        assert!(wait > Duration::from_millis(490) && wait <= Duration::from_millis(500));
        assert_eq!(RateLimiter::new(0).take(u64::MAX), Duration::ZERO);
    }

    #[test]
    fn snapshot_never_shows_done_above_total() {
        let progress = Progress::new();
        progress.add_bytes("standard", 10);
        let snap = progress.snapshot();
        assert_eq!(snap.bytes_done, 10);
        assert!(snap.bytes_total >= snap.bytes_done);
    }
}
