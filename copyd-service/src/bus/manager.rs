//! The org.example.Copyd1.Manager object: starts jobs, lists them, reports
//! the service's state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use copyd_engine::{Operation, PlanReport, Request, Resolved};
use zbus::message::Header;
use zbus::{interface, Connection, OwnedObjectPath, OwnedVariant, Variant};

use super::job::publish;
use super::{job_path, properties_changed, MANAGER_PATH};
use crate::audit;
use crate::auth::{self, actions};
use crate::caller::{self, Acting, Caller};
use crate::config::SecurityConfig;
use crate::error::{Error, Result};
use crate::jobs::JobManager;
use crate::{options, paths, security};

pub struct ManagerObject {
    pub jobs: Arc<JobManager>,
    pub observer: Arc<crate::observe::Observer>,
}

/// Decodes the arguments shared by Copy, Move and Plan.
fn request(
    operation: Operation,
    sources: &[Vec<u8>],
    destination: &[u8],
    options: &HashMap<String, OwnedVariant>,
) -> Result<(Request, options::JobOptions)> {
    if sources.is_empty() {
        return Err(Error::InvalidArgument("no sources given".into()));
    }
    let sources = sources
        .iter()
        .map(|bytes| paths::decode(bytes, "source"))
        .collect::<Result<Vec<_>>>()?;
    let destination = paths::decode(destination, "destination")?;
    let parsed = options::parse(options)?;
    // Refused before anything else happens (a move never goes unsynced).
    parsed.engine.check_for(operation)?;
    let request = Request {
        operation,
        sources,
        destination,
        options: parsed.engine.clone(),
    };
    Ok((request, parsed))
}

fn plan_report(report: PlanReport, engine: &str) -> HashMap<String, OwnedVariant> {
    let fits = report.fits();
    let paths = |list: Vec<std::path::PathBuf>| -> Vec<Vec<u8>> {
        list.iter().map(|p| paths::encode(p)).collect()
    };
    let entries: Vec<(&str, Variant<'static>)> = vec![
        ("files", Variant::U64(report.files)),
        ("directories", Variant::U64(report.directories)),
        ("symlinks", Variant::U64(report.symlinks)),
        ("specials", Variant::U64(report.specials)),
        ("bytes", Variant::U64(report.bytes)),
        ("targets", Variant::from(paths(report.targets))),
        ("conflicts", Variant::from(paths(report.conflicts))),
        (
            "renamed",
            Variant::from(
                (report.renamed.iter())
                    .map(|(source, copy)| (paths::encode(source), paths::encode(copy)))
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "destination-free-bytes",
            Variant::U64(report.destination_free_bytes),
        ),
        ("fits", Variant::Bool(fits)),
        ("create", Variant::U64(report.create)),
        (
            "decisions",
            Variant::from(
                (report.decisions.iter())
                    .map(|(decision, count)| (decision.to_string(), *count))
                    .collect::<HashMap<String, u64>>(),
            ),
        ),
        (
            "decided",
            Variant::from(
                (report.decided.iter())
                    .map(|(target, decision)| (paths::encode(target), decision.to_string()))
                    .collect::<Vec<_>>(),
            ),
        ),
        ("estimated-seconds", Variant::U64(report.estimated_seconds)),
        ("offloaded-bytes", Variant::U64(report.offloaded_bytes)),
        ("memory-bytes", Variant::U64(report.memory_bytes)),
        ("hole-bytes", Variant::U64(report.hole_bytes)),
        (
            "space",
            Variant::from(
                (report.space.iter())
                    .map(|(dir, free, needed)| (paths::encode(dir), *free, *needed))
                    .collect::<Vec<_>>(),
            ),
        ),
        (
            "problems",
            Variant::from(
                (report.problems.iter())
                    .map(|(path, why)| (paths::encode(path), why.clone()))
                    .collect::<Vec<_>>(),
            ),
        ),
        ("engine", Variant::from(engine.to_owned())),
    ];
    entries
        .into_iter()
        .map(|(key, value)| {
            let value = OwnedVariant::try_from(value).expect("plain values have no fds");
            (key.to_owned(), value)
        })
        .collect()
}

/// A request that passed every check, ready to run.
struct Admitted {
    caller: Caller,
    request: Request,
    options: options::JobOptions,
}

/// Records a refusal by the [security] rules.
fn audit_refusal(err: &Error, caller: &Caller, method: &str, request: &Request) {
    if let Error::PolicyRefused(message) = err {
        audit::Event::new(audit::Kind::PolicyRefused, method, "refused")
            .caller(caller)
            .paths(request_paths(request))
            .message(message.clone())
            .record();
    }
}

fn request_paths(request: &Request) -> Vec<&Path> {
    request
        .sources
        .iter()
        .chain([&request.destination])
        .map(PathBuf::as_path)
        .collect()
}

/// Resolves the request and applies the per-file [security] rules, with
/// the caller's rights (blocking). The job is made from what this resolved:
/// resolving looks at every source, once is enough.
fn vet(
    rules: &SecurityConfig,
    caller: &Caller,
    method: &str,
    request: &Request,
    privileged: bool,
) -> Result<Resolved> {
    let checked = caller
        .acting
        .run(|| security::vet(rules, request.clone(), privileged))?;
    checked.inspect_err(|err| audit_refusal(err, caller, method, request))
}

impl ManagerObject {
    /// Who is calling, what they ask, and whether they may: identifies the
    /// caller (from the bus), decodes the request, asks for the action the
    /// method needs (auth::actions), applies the [security] rules that need
    /// no file system, and decides with whose rights the work runs.
    #[allow(clippy::too_many_arguments)]
    async fn admit(
        &self,
        method: &str,
        operation: Operation,
        sources: &[Vec<u8>],
        destination: &[u8],
        options: &HashMap<String, OwnedVariant>,
        header: &Header<'_>,
        connection: &Connection,
    ) -> Result<Admitted> {
        let mut caller = match caller::identify(connection, header).await {
            Ok(caller) => caller,
            Err(err) => {
                auth::record_denial(method, &err, header);
                return Err(err);
            }
        };
        let (request, parsed) = request(operation, sources, destination, options)?;
        let rule = actions::rule(actions::MANAGER_INTERFACE, method)
            .ok_or_else(|| Error::NotAuthorized(format!("{method} has no authorization rule")))?;
        if let Some(action) = rule.action(parsed.privileged, false) {
            auth::authorize(
                connection,
                header,
                &caller,
                action,
                &request_paths(&request),
            )
            .await?;
        }
        security::check_request(&self.jobs.config().security, &request, parsed.privileged)
            .inspect_err(|err| audit_refusal(err, &caller, method, &request))?;
        if parsed.privileged {
            // polkit said yes to copy-privileged: the work runs as copyd.
            caller.acting = Acting::Daemon;
        }
        Ok(Admitted {
            caller,
            request,
            options: parsed,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_job(
        &self,
        method: &str,
        operation: Operation,
        sources: Vec<Vec<u8>>,
        destination: Vec<u8>,
        options: HashMap<String, OwnedVariant>,
        header: &Header<'_>,
        connection: &Connection,
    ) -> Result<OwnedObjectPath> {
        let Admitted {
            caller,
            request,
            options: parsed,
        } = self
            .admit(
                method,
                operation,
                &sources,
                &destination,
                &options,
                header,
                connection,
            )
            .await?;
        let privileged = parsed.privileged;
        let report_files = parsed.report_files;
        let jobs = self.jobs.clone();
        let method_name = method.to_owned();
        // Resolving stats the sources: keep it off the bus's executor
        // threads; it runs with the caller's rights (Acting::run), as the
        // job will.
        let job = tokio::task::spawn_blocking(move || -> Result<_> {
            let config = jobs.config();
            let rules = &config.security;
            let resolved = vet(rules, &caller, &method_name, &request, parsed.privileged)?;
            Ok(jobs.create(resolved, caller, parsed.start_paused, parsed.priority)?)
        })
        .await
        .map_err(|err| Error::Failed(err.to_string()))??;
        if report_files {
            // Before the job can start: none of its files goes unreported.
            job.progress.placed().enable();
        }
        self.launch(job, method, privileged, connection).await
    }

    /// Puts a job just made on the bus and in the queue.
    async fn launch(
        &self,
        job: Arc<crate::jobs::Job>,
        method: &str,
        privileged: bool,
        connection: &Connection,
    ) -> Result<OwnedObjectPath> {
        let operation = job.operation;
        if privileged {
            audit::Event::new(audit::Kind::PrivilegedJob, method, "started")
                .caller(&job.caller)
                .paths(
                    job.sources
                        .iter()
                        .chain([&job.destination])
                        .map(PathBuf::as_path),
                )
                .message(format!(
                    "job {} runs {}",
                    job.id,
                    job.caller.acting.describe()
                ))
                .record();
        }
        let path = job_path(&job.id);
        publish(connection, &self.jobs, &job).await?;
        tracing::info!(job = %job.id, uid = job.caller.uid, operation = %operation.name(), acting = %job.caller.acting.describe(), "job created");
        self.jobs.start(job);
        Self::job_counts_changed(connection).await;
        Ok(path)
    }

    /// Announces the properties a configuration reload may change.
    pub async fn reloaded(connection: &Connection) {
        let Ok(object) = connection
            .object_server()
            .interface::<_, ManagerObject>(MANAGER_PATH)
            .await
        else {
            return;
        };
        let emitter = object.signal_emitter();
        let manager = object.get().await;
        let _ = manager.max_concurrent_jobs_changed(emitter).await;
        let _ = manager.rate_limit_changed(emitter).await;
    }

    /// Announces ActiveJobs and QueuedJobs after a job changed state, in
    /// one signal: a job moving from queued to active is never seen in
    /// both counts or in neither.
    pub async fn job_counts_changed(connection: &Connection) {
        let Ok(iface) = connection
            .object_server()
            .interface::<_, ManagerObject>(MANAGER_PATH)
            .await
        else {
            return;
        };
        let (active, queued) = iface.get().await.jobs.counts();
        let changed = HashMap::from([
            ("ActiveJobs", Variant::U32(active)),
            ("QueuedJobs", Variant::U32(queued)),
        ]);
        properties_changed(iface.signal_emitter(), actions::MANAGER_INTERFACE, changed).await;
    }
}

#[interface(name = "org.example.Copyd1.Manager")]
impl ManagerObject {
    #[zbus(out_args("job"))]
    async fn copy(
        &self,
        sources: Vec<Vec<u8>>,
        destination: Vec<u8>,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath> {
        self.start_job(
            "Copy",
            Operation::Copy,
            sources,
            destination,
            options,
            &header,
            connection,
        )
        .await
    }

    #[zbus(out_args("job"))]
    async fn r#move(
        &self,
        sources: Vec<Vec<u8>>,
        destination: Vec<u8>,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath> {
        self.start_job(
            "Move",
            Operation::Move,
            sources,
            destination,
            options,
            &header,
            connection,
        )
        .await
    }

    /// A new job for exactly the files job `id` could not copy (its
    /// FailedFiles), each to the path its copy was to have, with the same
    /// options. For the job's owner (or root): the paths are theirs. Each
    /// file is checked again as a Copy or Move of it would be, with the
    /// caller's rights (and polkit's copy-privileged for a privileged job).
    #[zbus(out_args("job"))]
    async fn retry_job(
        &self,
        id: String,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<OwnedObjectPath> {
        const METHOD: &str = "RetryJob";
        if let Some(key) = options.keys().next() {
            return Err(Error::InvalidArgument(format!(
                "RetryJob takes no options yet (got {key:?})"
            )));
        }
        let mut caller = caller::identify(connection, &header)
            .await
            .inspect_err(|err| auth::record_denial(METHOD, err, &header))?;
        let job = self
            .jobs
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("no job {id:?}")))?;
        if caller.uid != job.caller.uid && caller.uid != 0 {
            return Err(Error::NotAuthorized(format!(
                "job {id} is another user's: only they (or root) may retry it"
            )));
        }
        let status = job.status();
        if !status.state.is_finished() {
            return Err(Error::InvalidArgument(format!(
                "job {id} has not ended: retry it once it has"
            )));
        }
        if status.failures.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "job {id} has no failed files to retry"
            )));
        }
        // A privileged job's files were reached as copyd: their retry needs
        // polkit's yes again.
        let privileged =
            matches!(job.caller.acting, Acting::Daemon) && job.caller.uid != caller::own_uid();
        let requests: Vec<Request> = status
            .failures
            .iter()
            .map(|failed| Request {
                operation: job.operation,
                sources: vec![failed.source.clone()],
                destination: failed.target.clone(),
                options: job.options().clone(),
            })
            .collect();
        let rule = actions::rule(actions::MANAGER_INTERFACE, METHOD)
            .ok_or_else(|| Error::NotAuthorized(format!("{METHOD} has no authorization rule")))?;
        if let Some(action) = rule.action(privileged, false) {
            let paths: Vec<&Path> = requests.iter().flat_map(request_paths).collect();
            auth::authorize(connection, &header, &caller, action, &paths).await?;
        }
        let config = self.jobs.config();
        for request in &requests {
            security::check_request(&config.security, request, privileged)
                .inspect_err(|err| audit_refusal(err, &caller, METHOD, request))?;
        }
        if privileged {
            caller.acting = Acting::Daemon;
        }
        let jobs = self.jobs.clone();
        let destination = job.destination.clone();
        let new_job = tokio::task::spawn_blocking(move || -> Result<_> {
            let config = jobs.config();
            let mut merged: Option<Resolved> = None;
            for request in &requests {
                let resolved = vet(&config.security, &caller, METHOD, request, privileged)?;
                match &mut merged {
                    None => merged = Some(resolved),
                    Some(all) => {
                        all.request.sources.extend(resolved.request.sources);
                        all.items.extend(resolved.items);
                    }
                }
            }
            let mut merged = merged.expect("a retry has at least one file");
            merged.request.destination = destination;
            Ok(jobs.create(merged, caller, false, 0)?)
        })
        .await
        .map_err(|err| Error::Failed(err.to_string()))??;
        tracing::info!(job = %new_job.id, retried = %id, files = new_job.sources.len(), "retrying the failed files of a job");
        self.launch(new_job, METHOD, privileged, connection).await
    }

    #[zbus(out_args("report"))]
    async fn plan(
        &self,
        sources: Vec<Vec<u8>>,
        destination: Vec<u8>,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<HashMap<String, OwnedVariant>> {
        let Admitted {
            caller,
            request,
            options: parsed,
        } = self
            .admit(
                "Plan",
                Operation::Copy,
                &sources,
                &destination,
                &options,
                &header,
                connection,
            )
            .await?;
        let engines = self.jobs.engines.clone();
        let engine = engines.select(&request.options.engine)?[0].name();
        if parsed.privileged {
            audit::Event::new(audit::Kind::PrivilegedJob, "Plan", "started")
                .caller(&caller)
                .paths(request_paths(&request))
                .message("a plan walks the sources as copyd")
                .record();
        }
        let jobs = self.jobs.clone();
        let report = tokio::task::spawn_blocking(move || -> Result<_> {
            vet(
                &jobs.config().security,
                &caller,
                "Plan",
                &request,
                parsed.privileged,
            )?;
            Ok(caller.acting.run(|| copyd_engine::plan(request))?)
        })
        .await
        .map_err(|err| Error::Failed(err.to_string()))??;
        let mut report = report;
        let mut estimated_from = "rate-limit";
        if report.estimated_seconds == 0 && report.bytes > 0 {
            // No rate limit: at the median rate of recent jobs, if any.
            estimated_from = "";
            if let Some(rate) = self.jobs.recent_rates.median().filter(|rate| *rate > 0) {
                report.estimated_seconds = report.bytes.div_ceil(rate);
                estimated_from = "recent-jobs";
            }
        }
        let mut out = plan_report(report, engine);
        out.insert(
            "estimated-from".into(),
            OwnedVariant::try_from(Variant::from(estimated_from)).expect("a string has no fds"),
        );
        Ok(out)
    }

    #[zbus(out_args("jobs"))]
    async fn list_jobs(&self) -> Vec<OwnedObjectPath> {
        self.jobs
            .list()
            .iter()
            .map(|job| job_path(&job.id))
            .collect()
    }

    #[zbus(out_args("job"))]
    async fn get_job(&self, id: &str) -> Result<OwnedObjectPath> {
        match self.jobs.get(id) {
            Some(job) => Ok(job_path(&job.id)),
            None => Err(Error::NotFound(format!("there is no job {id:?}"))),
        }
    }

    /// Everything an operator asks first, in one call (docs/OBSERVABILITY.md
    /// lists the keys).
    #[zbus(out_args("health"))]
    async fn get_health(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> HashMap<String, OwnedVariant> {
        // Where jobs write is their owners' business (as their paths are):
        // root sees every job's file systems, anyone else their own, and a
        // caller who cannot be identified none.
        let viewer = match crate::caller::identify(connection, &header).await {
            Ok(caller) if caller.uid == 0 => crate::health::Viewer::Everyone,
            Ok(caller) => crate::health::Viewer::Uid(caller.uid),
            Err(_) => crate::health::Viewer::Nobody,
        };
        crate::health::health(&self.jobs, &self.observer, viewer)
    }

    /// The performance report since copyd started, as a JSON document: its
    /// shape grows with the engines and their figures, which a fixed D-Bus
    /// signature could not follow.
    #[zbus(out_args("report"))]
    async fn get_performance(&self) -> String {
        self.observer.report().to_string()
    }

    /// The active alerts: (id, severity, message, since µs since the epoch).
    #[zbus(property, name = "Alerts")]
    fn alerts(&self) -> Vec<(String, String, String, u64)> {
        crate::health::alert_tuples()
    }

    #[zbus(signal, name = "AlertRaised")]
    pub async fn alert_raised(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        id: &str,
        severity: &str,
        message: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal, name = "AlertCleared")]
    pub async fn alert_cleared(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        id: &str,
    ) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"), name = "Version")]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    #[zbus(property(emits_changed_signal = "const"), name = "Engines")]
    fn engines(&self) -> Vec<String> {
        self.jobs
            .engines
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    #[zbus(property, name = "ActiveJobs")]
    fn active_jobs(&self) -> u32 {
        self.jobs.counts().0
    }

    #[zbus(property, name = "QueuedJobs")]
    fn queued_jobs(&self) -> u32 {
        self.jobs.counts().1
    }

    #[zbus(property, name = "Health")]
    fn health(&self) -> String {
        self.jobs.health()
    }

    /// Sets the global rate limit over all jobs (0: none) until copyd
    /// restarts; needs the polkit action org.example.copyd1.configure.
    async fn set_rate_limit(
        &self,
        bytes_per_second: u64,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
        #[zbus(signal_emitter)] emitter: zbus::object_server::SignalEmitter<'_>,
    ) -> Result<()> {
        let caller = match caller::identify(connection, &header).await {
            Ok(caller) => caller,
            Err(err) => {
                auth::record_denial("SetRateLimit", &err, &header);
                return Err(err);
            }
        };
        let action = actions::rule(actions::MANAGER_INTERFACE, "SetRateLimit")
            .and_then(|rule| rule.action(false, false))
            .ok_or_else(|| Error::NotAuthorized("SetRateLimit has no authorization rule".into()))?;
        auth::authorize(connection, &header, &caller, action, &[]).await?;
        self.jobs.set_global_rate_limit(bytes_per_second);
        let _ = self.rate_limit_changed(&emitter).await;
        Ok(())
    }

    #[zbus(property, name = "RateLimit")]
    fn rate_limit(&self) -> u64 {
        self.jobs.global_rate_limit()
    }

    /// Reads the configuration file again and puts what can change while
    /// copyd runs in use (as SIGHUP does); needs the polkit action
    /// org.example.copyd1.configure. Returns the keys that changed in the
    /// file but need a restart.
    #[zbus(out_args("needs_restart"))]
    async fn reload(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] connection: &Connection,
    ) -> Result<Vec<String>> {
        let caller = match caller::identify(connection, &header).await {
            Ok(caller) => caller,
            Err(err) => {
                auth::record_denial("Reload", &err, &header);
                return Err(err);
            }
        };
        let action = actions::rule(actions::MANAGER_INTERFACE, "Reload")
            .and_then(|rule| rule.action(false, false))
            .ok_or_else(|| Error::NotAuthorized("Reload has no authorization rule".into()))?;
        auth::authorize(connection, &header, &caller, action, &[]).await?;
        let kept = crate::reload(&self.jobs).map_err(Error::InvalidArgument)?;
        Self::reloaded(connection).await;
        Ok(kept.into_iter().map(str::to_owned).collect())
    }

    #[zbus(property, name = "MaxConcurrentJobs")]
    fn max_concurrent_jobs(&self) -> u32 {
        self.jobs.config().max_concurrent_jobs
    }
}
