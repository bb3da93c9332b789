//! Prometheus metrics on `http://<metrics_address>:<metrics_port>/metrics`
//! (`[monitoring]`), loopback unless configured otherwise. Off
//! (`enable_metrics = false`, the default): no recorder, nothing listens.
//!
//! Counters are bumped where things happen (the job-event subscriber in
//! [`crate::observe`], checkpoint writes, authorization, D-Bus calls);
//! gauges that describe the present (jobs by state, memory, open files)
//! are set when a scrape asks for them. docs/OBSERVABILITY.md lists all.
//!
//! The HTTP side is a few lines on tokio rather than the exporter's hyper
//! listener: one GET path, no keep-alive, and a much smaller build.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::MonitoringConfig;
use crate::jobs::{JobManager, JobState};
use crate::observe::Observer;

/// Seconds: from a tiny file's few milliseconds to a many-hour tree.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 14400.0,
];

/// What a scrape needs to describe the present.
struct Sources {
    jobs: Arc<JobManager>,
    observer: Arc<Observer>,
    handle: PrometheusHandle,
}

/// Installs the recorder and starts serving, if the configuration says so.
/// Returns where it listens.
pub async fn start(
    config: &MonitoringConfig,
    jobs: Arc<JobManager>,
    observer: Arc<Observer>,
) -> Result<Option<SocketAddr>, String> {
    if !config.enable_metrics {
        return Ok(None);
    }
    let address = SocketAddr::new(config.metrics_address, config.metrics_port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|err| format!("cannot serve metrics on {address}: {err}"))?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .map_err(|err| err.to_string())?
        .install_recorder()
        .map_err(|err| format!("cannot set up metrics: {err}"))?;
    describe_and_zero(&jobs);
    let sources = Arc::new(Sources {
        jobs,
        observer,
        handle,
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let sources = sources.clone();
            tokio::spawn(async move {
                let served =
                    tokio::time::timeout(Duration::from_secs(10), answer(stream, &sources)).await;
                if let Ok(Err(err)) = served {
                    tracing::debug!(%err, "metrics request failed");
                }
            });
        }
    });
    tracing::info!(%address, "serving metrics");
    Ok(Some(address))
}

/// One request, one answer, then the connection closes.
async fn answer(mut stream: tokio::net::TcpStream, sources: &Sources) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..n]);
    }
    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, target) = (words.next(), words.next());
    let path = target.map(|t| t.split(|b| *b == b'?').next().unwrap_or_default());
    let (status, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => ("200 OK", render(sources)),
        (Some(b"GET"), _) => ("404 Not Found", "only /metrics is here\n".to_owned()),
        _ => ("405 Method Not Allowed", "GET /metrics\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The gauges of the present, then everything in Prometheus' text format.
fn render(sources: &Sources) -> String {
    let mut by_state = [0u64; 3];
    let mut rate = 0u64;
    for job in sources.jobs.list() {
        let status = job.status();
        match status.state {
            JobState::Running => {
                by_state[0] += 1;
                rate += status.last_report.rate;
            }
            JobState::Queued | JobState::Interrupted => by_state[1] += 1,
            JobState::Paused => by_state[2] += 1,
            _ => {}
        }
    }
    metrics::gauge!("copyd_jobs_active").set(by_state[0] as f64);
    metrics::gauge!("copyd_jobs_queued").set(by_state[1] as f64);
    metrics::gauge!("copyd_jobs_paused").set(by_state[2] as f64);
    metrics::gauge!("copyd_transfer_rate_bytes_per_second").set(rate as f64);
    metrics::gauge!("copyd_rate_limit_bytes_per_second")
        .set(sources.jobs.global_rate_limit() as f64);
    metrics::gauge!("copyd_uptime_seconds").set(sources.observer.uptime().as_secs_f64());
    metrics::gauge!("copyd_alerts_active").set(crate::alerts::active_count() as f64);
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!("copyd_memory_resident_bytes").set(bytes as f64);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("copyd_open_fds").set(dir.count() as f64);
    }
    sources.handle.run_upkeep();
    sources.handle.render()
}

/// Resident memory, from /proc/self/status (VmRSS, in KiB).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// Help texts, and every counter at 0 from the start, so that a series
/// exists (and rate() works) before its first event.
fn describe_and_zero(jobs: &JobManager) {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("copyd_build_info", "Always 1; the version is in the label");
    metrics::gauge!("copyd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    describe_counter!(
        "copyd_jobs_total",
        "Jobs that ended, by operation and end state"
    );
    for operation in ["copy", "move"] {
        for state in ["completed", "failed", "cancelled"] {
            metrics::counter!("copyd_jobs_total", "operation" => operation, "state" => state)
                .absolute(0);
        }
    }
    describe_gauge!("copyd_jobs_active", "Jobs running now");
    describe_gauge!(
        "copyd_jobs_queued",
        "Jobs waiting for a slot (queued, or interrupted awaiting resume)"
    );
    describe_gauge!("copyd_jobs_paused", "Jobs paused");
    describe_counter!(
        "copyd_bytes_transferred_total",
        Unit::Bytes,
        "Bytes copied, by the engine that moved them"
    );
    describe_counter!(
        "copyd_engine_operations_total",
        "Copy operations (a range an engine copied, a file of an io_uring batch), by engine"
    );
    for engine in jobs.engines.names() {
        metrics::counter!("copyd_bytes_transferred_total", "engine" => engine).absolute(0);
        metrics::counter!("copyd_engine_operations_total", "engine" => engine).absolute(0);
    }
    describe_counter!("copyd_files_transferred_total", "Files copied or moved");
    metrics::counter!("copyd_files_transferred_total").absolute(0);
    describe_gauge!(
        "copyd_transfer_rate_bytes_per_second",
        "Bytes per second of all running jobs together"
    );
    describe_gauge!(
        "copyd_rate_limit_bytes_per_second",
        "The global rate limit (0: none)"
    );
    describe_counter!(
        "copyd_errors_total",
        "Failed jobs by error kind, and files that could not be copied (kind=file)"
    );
    for kind in [
        "file",
        "Failed",
        "NoSpace",
        "PermissionDenied",
        "NotFound",
        "ChecksumMismatch",
    ] {
        metrics::counter!("copyd_errors_total", "kind" => kind).absolute(0);
    }
    describe_counter!(
        "copyd_retries_total",
        "Transient I/O errors tried again ([engine] retry_attempts, retry_backoff)"
    );
    metrics::counter!("copyd_retries_total").absolute(0);
    describe_counter!(
        "copyd_resumes_total",
        "Interrupted jobs carried on (Resume, or auto_resume at start)"
    );
    metrics::counter!("copyd_resumes_total").absolute(0);
    describe_histogram!(
        "copyd_job_duration_seconds",
        Unit::Seconds,
        "From a job's start to its end"
    );
    describe_histogram!(
        "copyd_queue_wait_seconds",
        Unit::Seconds,
        "From a job's creation to its start"
    );
    describe_counter!("copyd_checkpoint_writes_total", "Checkpoints written");
    describe_counter!(
        "copyd_checkpoint_failures_total",
        "Checkpoints that could not be written"
    );
    metrics::counter!("copyd_checkpoint_writes_total").absolute(0);
    metrics::counter!("copyd_checkpoint_failures_total").absolute(0);
    describe_counter!(
        "copyd_auth_denials_total",
        "Calls refused by authorization, by polkit action"
    );
    for action in crate::auth::actions::Action::ALL {
        metrics::counter!("copyd_auth_denials_total", "action" => action.id()).absolute(0);
    }
    describe_counter!("copyd_dbus_calls_total", "D-Bus method calls, by method");
    describe_counter!(
        "copyd_polkit_errors_total",
        "polkit checks that got no answer (polkit unreachable or failing)"
    );
    metrics::counter!("copyd_polkit_errors_total").absolute(0);
    describe_gauge!(
        "copyd_memory_resident_bytes",
        Unit::Bytes,
        "Resident memory of copyd"
    );
    describe_gauge!("copyd_open_fds", "File descriptors copyd has open");
    describe_counter!(
        "copyd_verify_mismatches_total",
        "Copies whose digest, read back from the storage, did not match the source's (verify)"
    );
    metrics::counter!("copyd_verify_mismatches_total").absolute(0);
    describe_gauge!("copyd_alerts_active", "Alerts raised and not cleared");
    describe_gauge!("copyd_uptime_seconds", Unit::Seconds, "Since copyd started");
}
