//! The org.example.Copyd1.Manager object: starts jobs, lists them, reports
//! the service's state.

use std::collections::HashMap;
use std::sync::Arc;

use copyd_engine::{Operation, PlanReport, Request};
use zbus::message::Header;
use zbus::{interface, Connection, OwnedObjectPath, OwnedVariant, Variant};

use super::job::publish;
use super::{job_path, MANAGER_PATH};
use crate::caller::{self, Caller};
use crate::error::{Error, Result};
use crate::jobs::JobManager;
use crate::{options, paths};

pub struct ManagerObject {
    pub jobs: Arc<JobManager>,
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
        ("bytes", Variant::U64(report.bytes)),
        ("targets", Variant::from(paths(report.targets))),
        ("conflicts", Variant::from(paths(report.conflicts))),
        (
            "destination-free-bytes",
            Variant::U64(report.destination_free_bytes),
        ),
        ("fits", Variant::Bool(fits)),
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

impl ManagerObject {
    /// Identifies the caller and checks it may start work.
    async fn caller(connection: &Connection, header: &Header<'_>) -> Result<Caller> {
        let caller = caller::identify(connection, header).await?;
        caller::require_same_user(&caller)?;
        Ok(caller)
    }

    async fn start_job(
        &self,
        operation: Operation,
        sources: Vec<Vec<u8>>,
        destination: Vec<u8>,
        options: HashMap<String, OwnedVariant>,
        header: &Header<'_>,
        connection: &Connection,
    ) -> Result<OwnedObjectPath> {
        let caller = Self::caller(connection, header).await?;
        let (request, parsed) = request(operation, &sources, &destination, &options)?;
        let jobs = self.jobs.clone();
        // Resolving stats the sources: keep it off the bus's executor threads.
        let job =
            tokio::task::spawn_blocking(move || jobs.create(request, caller, parsed.start_paused))
                .await
                .map_err(|err| Error::Failed(err.to_string()))??;
        let path = job_path(&job.id);
        let events = publish(connection, &self.jobs, &job).await?;
        tracing::info!(job = %job.id, uid = job.caller.uid, operation = operation.name(), "job created");
        self.jobs.start(job, events);
        Self::job_counts_changed(connection).await;
        Ok(path)
    }

    /// Announces ActiveJobs and QueuedJobs after a job changed state.
    pub async fn job_counts_changed(connection: &Connection) {
        let Ok(iface) = connection
            .object_server()
            .interface::<_, ManagerObject>(MANAGER_PATH)
            .await
        else {
            return;
        };
        let emitter = iface.signal_emitter();
        let manager = iface.get().await;
        let _ = manager.active_jobs_changed(emitter).await;
        let _ = manager.queued_jobs_changed(emitter).await;
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
            Operation::Move,
            sources,
            destination,
            options,
            &header,
            connection,
        )
        .await
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
        Self::caller(connection, &header).await?;
        let (request, _) = request(Operation::Copy, &sources, &destination, &options)?;
        let engines = self.jobs.engines.clone();
        let engine = engines.select(&request.options.engine)?[0].name();
        let report = tokio::task::spawn_blocking(move || copyd_engine::plan(request))
            .await
            .map_err(|err| Error::Failed(err.to_string()))??;
        Ok(plan_report(report, engine))
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

    #[zbus(property(emits_changed_signal = "const"), name = "RateLimit")]
    fn rate_limit(&self) -> u64 {
        self.jobs.config.rate_limit
    }

    #[zbus(property(emits_changed_signal = "const"), name = "MaxConcurrentJobs")]
    fn max_concurrent_jobs(&self) -> u32 {
        self.jobs.config.max_concurrent_jobs
    }
}
