//! The org.example.Copyd1.Job object of one job, and the task that turns the
//! job's events into D-Bus signals.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, OwnedVariant, Variant};

use super::manager::ManagerObject;
use super::{job_path, properties_changed};
use crate::auth::{self, actions};
use crate::caller::{self, Caller};
use crate::error::{error_name, summary, Error, Result};
use crate::jobs::events::JobUpdate;
use crate::jobs::{Job, JobEvent, JobManager, JobState, ProgressReport};
use crate::paths;

pub const JOB_INTERFACE: &str = "org.example.Copyd1.Job";

pub struct JobObject {
    pub job: Arc<Job>,
    pub jobs: Arc<JobManager>,
}

/// Puts `job` on the bus and starts turning its events (from the job
/// manager's stream) into signals.
pub async fn publish(
    connection: &Connection,
    jobs: &Arc<JobManager>,
    job: &Arc<Job>,
) -> zbus::Result<()> {
    // Subscribed before anything can start the job: its first events are
    // on their way as soon as this returns.
    let receiver = jobs.subscribe();
    let object = JobObject {
        job: job.clone(),
        jobs: jobs.clone(),
    };
    connection
        .object_server()
        .at(job_path(&job.id), object)
        .await?;
    // Looked at now, not when the task first runs: a new job may be over
    // by then, and its Completed must still go out.
    let already_finished = job.state().is_finished();
    tokio::spawn(forward_events(
        connection.clone(),
        jobs.clone(),
        job.clone(),
        already_finished,
        receiver,
    ));
    Ok(())
}

/// Job methods take options for growth; none are defined yet.
fn refuse_options(options: &HashMap<String, OwnedVariant>) -> Result<()> {
    match options.keys().next() {
        None => Ok(()),
        Some(key) => Err(Error::InvalidArgument(format!("unknown option {key:?}"))),
    }
}

impl JobObject {
    /// Whether the sender of a property read may see the job's paths: its
    /// owner and root may; anyone else (and a read with no sender, such as
    /// the ObjectManager's InterfacesAdded) sees them empty.
    async fn may_see_paths(&self, connection: &Connection, header: Option<&Header<'_>>) -> bool {
        let Some(header) = header else {
            return false;
        };
        match caller::identify(connection, header).await {
            Ok(caller) => caller.uid == self.job.caller.uid || caller.uid == 0,
            Err(_) => false,
        }
    }

    /// The job's owner may steer it; anyone else needs what the action
    /// table says for the method (manage-other-jobs), from polkit. Root
    /// goes through the same rule (and polkit says yes to root).
    async fn authorize(&self, connection: &Connection, header: &Header<'_>) -> Result<Caller> {
        let method = header.member().map_or("?", |m| m.as_str()).to_owned();
        let caller = match caller::identify(connection, header).await {
            Ok(caller) => caller,
            Err(err) => {
                auth::record_denial(&method, &err, header);
                return Err(err);
            }
        };
        let rule = actions::rule(actions::JOB_INTERFACE, &method)
            .ok_or_else(|| Error::NotAuthorized(format!("{method} has no authorization rule")))?;
        let is_owner = caller.uid == self.job.caller.uid;
        if let Some(action) = rule.action(false, is_owner) {
            auth::authorize(connection, header, &caller, action, &[])
                .await
                .map_err(|err| match err {
                    Error::NotAuthorized(message) => Error::NotAuthorized(format!(
                        "job {} belongs to uid {}: {message}",
                        self.job.id, self.job.caller.uid
                    )),
                    Error::NotAuthorizedCanObtain(message) => {
                        Error::NotAuthorizedCanObtain(format!(
                            "job {} belongs to uid {}: {message}",
                            self.job.id, self.job.caller.uid
                        ))
                    }
                    other => other,
                })?;
        }
        Ok(caller)
    }
}

#[interface(name = "org.example.Copyd1.Job")]
impl JobObject {
    async fn cancel(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<()> {
        refuse_options(&options)?;
        self.authorize(connection, &header).await?;
        Ok(self.jobs.cancel(&self.job).await?)
    }

    async fn pause(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<()> {
        refuse_options(&options)?;
        self.authorize(connection, &header).await?;
        Ok(self.jobs.pause(&self.job)?)
    }

    async fn resume(
        &self,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<()> {
        refuse_options(&options)?;
        self.authorize(connection, &header).await?;
        Ok(self.jobs.resume(&self.job)?)
    }

    /// Sets this job's own rate limit in bytes per second (0: none); the
    /// global limit applies as well. Kept in the job's checkpoint: it holds
    /// for a job still queued, and after a restart.
    async fn set_rate_limit(
        &self,
        bytes_per_second: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<()> {
        self.authorize(connection, &header).await?;
        Ok(self.jobs.set_rate_limit(&self.job, bytes_per_second)?)
    }

    #[zbus(signal)]
    async fn progress(
        emitter: &SignalEmitter<'_>,
        bytes_done: u64,
        bytes_total: u64,
        files_done: u64,
        files_total: u64,
        rate: u64,
        expected_end_time: u64,
    ) -> zbus::Result<()>;

    /// The job waits on a conflict (on-conflict ask): sent to the owner.
    #[zbus(signal)]
    async fn conflict_raised(
        emitter: &SignalEmitter<'_>,
        target: Vec<u8>,
        existing: HashMap<&str, Variant<'_>>,
        incoming: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<()>;

    /// Answers the conflict the job waits on: skip, overwrite, update,
    /// rename or backup, for this one or (apply_to_all) every later one.
    async fn resolve_conflict(
        &self,
        action: &str,
        apply_to_all: bool,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<()> {
        self.authorize(connection, &header).await?;
        let answer =
            copyd_engine::ConflictAnswer::parse(action, apply_to_all).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "action {action:?} is not one of skip, overwrite, update, rename, backup"
                ))
            })?;
        if !self.job.control.answer(answer) {
            return Err(Error::InvalidArgument(
                "the job is not waiting on a conflict".into(),
            ));
        }
        Ok(())
    }

    /// Files placed since the last FilesPlaced, for a job asked to report
    /// them: sent to the owner only.
    #[zbus(signal)]
    async fn files_placed(
        emitter: &SignalEmitter<'_>,
        files: Vec<(&str, bool, Vec<u8>, Vec<u8>)>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn completed(
        emitter: &SignalEmitter<'_>,
        success: bool,
        error_name: &str,
        message: &str,
    ) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"), name = "Id")]
    fn id(&self) -> String {
        self.job.id.clone()
    }

    #[zbus(property(emits_changed_signal = "const"), name = "Operation")]
    fn operation(&self) -> String {
        self.job.operation.name().to_owned()
    }

    #[zbus(property, name = "State")]
    fn state(&self) -> String {
        self.job.state().name().to_owned()
    }

    #[zbus(property(emits_changed_signal = "const"), name = "Sources")]
    async fn sources(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> Vec<Vec<u8>> {
        if !self.may_see_paths(connection, header.as_ref()).await {
            return Vec::new();
        }
        self.job.sources.iter().map(|p| paths::encode(p)).collect()
    }

    #[zbus(property(emits_changed_signal = "const"), name = "Destination")]
    async fn destination(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> Vec<u8> {
        if !self.may_see_paths(connection, header.as_ref()).await {
            return Vec::new();
        }
        paths::encode(&self.job.destination)
    }

    #[zbus(property, name = "BytesTotal")]
    fn bytes_total(&self) -> u64 {
        self.job.counts().bytes_total
    }

    #[zbus(property, name = "BytesDone")]
    fn bytes_done(&self) -> u64 {
        self.job.counts().bytes_done
    }

    #[zbus(property, name = "FilesTotal")]
    fn files_total(&self) -> u64 {
        self.job.counts().files_total
    }

    #[zbus(property, name = "FilesDone")]
    fn files_done(&self) -> u64 {
        self.job.counts().files_done
    }

    #[zbus(property, name = "Rate")]
    fn rate(&self) -> u64 {
        self.job.status().last_report.rate
    }

    #[zbus(property, name = "StartTime")]
    fn start_time(&self) -> u64 {
        self.job.status().start_time
    }

    #[zbus(property, name = "EndTime")]
    fn end_time(&self) -> u64 {
        self.job.status().end_time
    }

    #[zbus(property, name = "ExpectedEndTime")]
    fn expected_end_time(&self) -> u64 {
        self.job.status().last_report.expected_end_time
    }

    #[zbus(property, name = "Engine")]
    fn engine(&self) -> String {
        self.job
            .progress
            .main_engine()
            .unwrap_or_default()
            .to_owned()
    }

    #[zbus(property, name = "EngineBytes")]
    fn engine_bytes(&self) -> HashMap<String, u64> {
        self.job
            .progress
            .engine_bytes()
            .into_iter()
            .map(|(name, bytes)| (name.to_owned(), bytes))
            .collect()
    }

    #[zbus(property, name = "Conflicts")]
    fn conflicts(&self) -> HashMap<String, u64> {
        conflicts(&self.job)
    }

    #[zbus(property, name = "CurrentPath")]
    async fn current_path(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> Vec<u8> {
        if !self.may_see_paths(connection, header.as_ref()).await {
            return Vec::new();
        }
        paths::encode(&self.job.progress.current_path())
    }

    #[zbus(property(emits_changed_signal = "const"), name = "StartedByUID")]
    fn started_by_uid(&self) -> u32 {
        self.job.caller.uid
    }

    #[zbus(property, name = "Cancelable")]
    fn cancelable(&self) -> bool {
        !self.job.state().is_finished()
    }

    #[zbus(property, name = "ErrorName")]
    fn error_name(&self) -> String {
        self.job
            .status()
            .error
            .map(|err| error_name(err.kind))
            .unwrap_or_default()
    }

    #[zbus(property, name = "FailedFiles")]
    async fn failed_files(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> Vec<(Vec<u8>, String)> {
        if !self.may_see_paths(connection, header.as_ref()).await {
            return Vec::new();
        }
        failed_files(&self.job.status().failures)
    }

    #[zbus(property, name = "Checksums")]
    async fn checksums(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> Vec<(Vec<u8>, String, bool)> {
        if !self.may_see_paths(connection, header.as_ref()).await {
            return Vec::new();
        }
        checksums(&self.job.status().checksums)
    }

    #[zbus(property, name = "Routes")]
    async fn routes(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> Vec<RouteEntry> {
        if !self.may_see_paths(connection, header.as_ref()).await {
            return Vec::new();
        }
        routes(&self.job)
    }

    #[zbus(property(emits_changed_signal = "const"), name = "Verify")]
    fn verify(&self) -> String {
        self.job.verify().name().to_owned()
    }

    #[zbus(property, name = "Retries")]
    fn retries(&self) -> u64 {
        self.job.progress.retries()
    }

    #[zbus(property, name = "ErrorMessage")]
    async fn error_message(
        &self,
        #[zbus(header)] header: Option<Header<'_>>,
        #[zbus(connection)] connection: &Connection,
    ) -> String {
        let Some(err) = self.job.status().error else {
            return String::new();
        };
        if self.may_see_paths(connection, header.as_ref()).await {
            err.message
        } else {
            summary(err.kind).to_owned()
        }
    }
}

/// Where the job's owner listens: its unique bus name, when the job was
/// created in this run of copyd through a bus; on a private connection, the
/// one peer. None when nobody can be told (a recovered job).
fn owner_emitter<'a>(
    emitter: &SignalEmitter<'a>,
    connection: &Connection,
    job: &Job,
) -> Option<SignalEmitter<'a>> {
    if !connection.is_bus() {
        return Some(emitter.clone());
    }
    let name = job.caller.bus_name.as_deref()?;
    let name = zbus::names::BusName::try_from(name.to_owned()).ok()?;
    Some(emitter.clone().set_destination(name))
}

fn progress_properties(
    job: &Job,
    report: &ProgressReport,
) -> HashMap<&'static str, Variant<'static>> {
    let counts = &report.counts;
    HashMap::from([
        ("BytesDone", Variant::U64(counts.bytes_done)),
        ("BytesTotal", Variant::U64(counts.bytes_total)),
        ("FilesDone", Variant::U64(counts.files_done)),
        ("FilesTotal", Variant::U64(counts.files_total)),
        ("Rate", Variant::U64(report.rate)),
        ("ExpectedEndTime", Variant::U64(report.expected_end_time)),
        (
            "Engine",
            Variant::from(job.progress.main_engine().unwrap_or_default().to_owned()),
        ),
        ("Conflicts", Variant::from(conflicts(job))),
        ("Retries", Variant::U64(job.progress.retries())),
    ])
}

/// Targets found taken so far, by what on-conflict did with them.
fn conflicts(job: &Job) -> HashMap<String, u64> {
    (job.progress.conflicts().into_iter())
        .map(|(decision, count)| (decision.to_owned(), count))
        .collect()
}

/// The properties that carry paths: sent only to the job's owner.
fn path_properties(job: &Job) -> HashMap<&'static str, Variant<'static>> {
    let status = job.status();
    HashMap::from([
        (
            "CurrentPath",
            Variant::from(paths::encode(&job.progress.current_path())),
        ),
        ("FailedFiles", Variant::from(failed_files(&status.failures))),
        ("Checksums", Variant::from(checksums(&status.checksums))),
        (
            "ErrorMessage",
            Variant::from(status.error.map(|e| e.message).unwrap_or_default()),
        ),
    ])
}

/// Turns `job`'s events into signals until it finishes, keeps the finished
/// job listed for the retention time (or until too many finished jobs are
/// kept), then takes it off the bus.
pub async fn forward_events(
    connection: Connection,
    jobs: Arc<JobManager>,
    job: Arc<Job>,
    already_finished: bool,
    mut events: tokio::sync::broadcast::Receiver<JobUpdate>,
) {
    let path = job_path(&job.id);
    let emitter = SignalEmitter::new(&connection, path.clone()).expect("job paths are valid");
    // Paths reach only the job's owner (see path_properties).
    let owner = owner_emitter(&emitter, &connection, &job);
    // A job recovered as finished sends nothing more.
    let mut finished = already_finished;
    while !finished {
        let event = match events.recv().await {
            Ok(update) if *update.job_id == *job.id => update.event,
            Ok(_) => continue,
            // Fell behind the stream: what was missed is in the job's
            // status, which the next events would only repeat. Catch up
            // from it (a finished job then gets its Completed).
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(job = %job.id, missed, "caught up with the job-event stream");
                let status = job.status();
                if status.state.is_finished() {
                    JobEvent::Finished
                } else {
                    JobEvent::State(status.state)
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        };
        match event {
            JobEvent::Progress(report) => {
                let counts = &report.counts;
                let sent = emitter
                    .progress(
                        counts.bytes_done,
                        counts.bytes_total,
                        counts.files_done,
                        counts.files_total,
                        report.rate,
                        report.expected_end_time,
                    )
                    .await;
                if let Err(err) = sent {
                    tracing::debug!(%err, "could not send Progress");
                }
                properties_changed(&emitter, JOB_INTERFACE, progress_properties(&job, &report))
                    .await;
                if let Some(owner) = &owner {
                    properties_changed(owner, JOB_INTERFACE, path_properties(&job)).await;
                }
            }
            JobEvent::State(state) => {
                let status = job.status();
                properties_changed(
                    &emitter,
                    JOB_INTERFACE,
                    HashMap::from([
                        ("State", Variant::from(state.name())),
                        ("Cancelable", Variant::Bool(!state.is_finished())),
                        ("StartTime", Variant::U64(status.start_time)),
                    ]),
                )
                .await;
                ManagerObject::job_counts_changed(&connection).await;
            }
            JobEvent::ConflictRaised(question) => {
                // Paths are the owner's business; nobody else is asked.
                if let Some(owner) = &owner {
                    let side = |side: &copyd_engine::conflict::Side| {
                        HashMap::from([
                            ("type", Variant::from(side.kind)),
                            ("size", Variant::U64(side.size)),
                            ("mtime", Variant::U64(side.mtime_us)),
                        ])
                    };
                    let sent = owner
                        .conflict_raised(
                            paths::encode(&question.target),
                            side(&question.existing),
                            side(&question.incoming),
                        )
                        .await;
                    if let Err(err) = sent {
                        tracing::debug!(%err, "could not send ConflictRaised");
                    }
                }
            }
            JobEvent::FilesPlaced(files) => {
                // Paths: the owner's only. Nobody to tell, nothing sent.
                if let Some(owner) = &owner {
                    send_files_placed(owner, &files).await;
                }
            }
            JobEvent::Finished => {
                let status = job.status();
                // Completed is for every listener: its message says what
                // kind of failure it was, without paths (ErrorMessage has
                // the whole story, for the owner).
                let (name, message) = status
                    .error
                    .as_ref()
                    .map(|err| (error_name(err.kind), summary(err.kind).to_owned()))
                    .unwrap_or_default();
                properties_changed(
                    &emitter,
                    JOB_INTERFACE,
                    HashMap::from([
                        ("EndTime", Variant::U64(status.end_time)),
                        ("ErrorName", Variant::from(name.clone())),
                    ]),
                )
                .await;
                if let Some(owner) = &owner {
                    properties_changed(owner, JOB_INTERFACE, path_properties(&job)).await;
                }
                let success = status.state == JobState::Completed;
                if let Err(err) = emitter.completed(success, &name, &message).await {
                    tracing::debug!(%err, "could not send Completed");
                }
                finished = true;
            }
        }
    }
    // Not kept through the retention time: a receiver holds back the
    // stream's slots it has not read.
    drop(events);
    jobs.retain_finished(&job);
    // Kept for the retention time, unless more finished jobs than
    // job_retention_count are kept and this is among the oldest.
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(jobs.config().job_retention_seconds)) => {}
        _ = job.told_to_leave() => {}
    }
    let removed = connection
        .object_server()
        .remove::<JobObject, _>(&path)
        .await;
    if let Err(err) = removed {
        tracing::debug!(%err, path = %path, "could not remove the job object");
    }
    jobs.remove(&job.id);
    ManagerObject::job_counts_changed(&connection).await;
}

/// At most how many files one FilesPlaced carries: a tick's worth of a fast
/// tree can be tens of thousands, and one message must stay well below the
/// bus's size limit (paths may be 4 KiB each).
const FILES_PER_SIGNAL: usize = 1024;

/// `files` to the owner, as FilesPlaced signals of at most FILES_PER_SIGNAL.
async fn send_files_placed(owner: &SignalEmitter<'_>, files: &[copyd_engine::PlacedFile]) {
    for chunk in files.chunks(FILES_PER_SIGNAL) {
        let batch = chunk
            .iter()
            .map(|file| {
                (
                    file.action.name(),
                    file.directory,
                    paths::encode(&file.source),
                    paths::encode(&file.target),
                )
            })
            .collect();
        if let Err(err) = owner.files_placed(batch).await {
            tracing::debug!(%err, "could not send FilesPlaced");
        }
    }
}

fn failed_files(failures: &[crate::jobs::FailedFile]) -> Vec<(Vec<u8>, String)> {
    failures
        .iter()
        .map(|failed| (paths::encode(&failed.source), failed.message.clone()))
        .collect()
}

/// One entry of Routes: (source mount point, copy's mount point, files,
/// bytes by engine, why).
type RouteEntry = (String, String, u64, HashMap<String, u64>, Vec<String>);

/// How the job's bytes went between file systems (mount points), by
/// engine, and why: what `copyctl status --verbose JOB` shows.
fn routes(job: &Job) -> Vec<RouteEntry> {
    job.progress
        .routes()
        .into_iter()
        .map(|((source, copy), route)| {
            (
                crate::health::mount_point_of_device(source),
                crate::health::mount_point_of_device(copy),
                route.files,
                (route.engine_bytes.into_iter())
                    .map(|(engine, bytes)| (engine.to_owned(), bytes))
                    .collect(),
                route.why.into_iter().map(str::to_owned).collect(),
            )
        })
        .collect()
}

/// Each copy checked by digest: its path, the digest, and whether the copy
/// shares the source's extents (then the source's digest stands for both).
fn checksums(checksums: &[copyd_engine::Checksum]) -> Vec<(Vec<u8>, String, bool)> {
    checksums
        .iter()
        .map(|c| (paths::encode(&c.target), c.digest.clone(), c.shared_extents))
        .collect()
}
