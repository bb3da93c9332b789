//! copyd, the file copy service on D-Bus.
//!
//! Layers, each knowing only the ones below it:
//! - `copyd_engine` (its own crate): copies, with no D-Bus and no async.
//! - [`jobs`]: job state, the queue and progress sampling; no D-Bus.
//! - [`bus`]: the zbus objects of the contract in dbus/org.example.Copyd1.xml.
//! - [`caller`]: who is calling, from the bus or the socket, and with whose
//!   rights its work runs.
//! - [`auth`]: the action each method needs and asking polkit for it;
//!   [`security`]: the [security] rules; [`audit`]: the audit trail.

// unsafe code lives only in the engine's io_uring module.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod caller;
pub mod config;
pub mod error;
pub mod health;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod options;
pub mod paths;
pub mod security;
pub mod units;

use std::sync::Arc;
use std::time::Duration;

use copyd_engine::EngineSet;

pub use bus::Endpoint;
pub use config::Config;
use jobs::store::Store;
use jobs::{JobManager, Persistence};
pub use logging::init_logging;

/// How long shutdown waits for cancelled jobs to clean up after themselves.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves copyd on `endpoint` until SIGTERM or SIGINT, or, for a private
/// peer, until the peer goes away. Jobs still running then are cancelled,
/// which removes their temporary files.
pub async fn serve(endpoint: Endpoint, config: Config) -> Result<(), String> {
    let peer = matches!(endpoint, Endpoint::Peer(_));
    audit::init(config.audit_log.as_deref())?;
    let mut engines = EngineSet::probe_with(config.engine.io_uring());
    if !config.engine.enable_io_uring {
        engines = engines.without(copyd_engine::EngineId::IoUring);
    }
    if config.socket_path.is_some() {
        // Said once, at start: the key comes from a layout written for a
        // socket service; copyd's clients reach it through D-Bus.
        tracing::info!(
            "[daemon] socket_path is ignored: copyd serves on D-Bus (see docs/OBSERVABILITY.md)"
        );
    }
    tracing::info!(engines = %engines.names().join(", "), "probed engines");
    let persistence = if peer {
        // A private copyd's jobs end with its one client: nothing to resume.
        Persistence::Disabled
    } else {
        match config.state_dir() {
            None => Persistence::Unavailable("no state directory ($HOME is not set)".into()),
            Some(dir) => match Store::open(&dir) {
                Ok(store) => Persistence::Enabled(store),
                Err(err) => Persistence::Unavailable(format!(
                    "state directory {} is not writable: {err}",
                    dir.display()
                )),
            },
        }
    };
    let jobs = JobManager::new(config, engines, persistence);
    let health = jobs.health();
    if health != "ok" {
        tracing::warn!(%health, "copyd is degraded");
    }
    let observer = observe::Observer::start(&jobs);
    metrics::start(&jobs.config().monitoring, jobs.clone(), observer.clone()).await?;
    alerts::start(jobs.clone(), observer.clone());
    let recovered = jobs.recover();
    let connection = bus::connect(endpoint, jobs.clone(), observer, recovered)
        .await
        .map_err(|err| format!("cannot serve on D-Bus: {err}"))?;
    match connection.unique_name() {
        Some(name) => tracing::info!(unique_name = %name, "copyd is serving"),
        None => tracing::info!("copyd is serving (peer to peer)"),
    }

    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).map_err(|err| err.to_string())?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|err| err.to_string())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                // A broken file is logged and changes nothing: the running
                // configuration stays.
                match reload(&jobs) {
                    Ok(_) => bus::manager::ManagerObject::reloaded(&connection).await,
                    Err(err) => tracing::error!(error = %err, "SIGHUP: configuration not reloaded"),
                }
                continue;
            }
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = connection.closed(), if peer => tracing::info!("the client went away: shutting down"),
            _ = connection.closed(), if !peer => return Err("lost the bus connection".into()),
        }
        break;
    }
    stop_all(&jobs).await;
    Ok(())
}

/// Reads the configuration file again and puts it in use where it can
/// change while copyd runs (JobManager::reload). Returns the keys that
/// changed but need a restart; a broken file is an error (file:line: key)
/// and changes nothing.
pub fn reload(jobs: &JobManager) -> Result<Vec<&'static str>, String> {
    let current = jobs.config();
    let mut new = Config::load(current.file.as_deref()).map_err(|err| err.to_string())?;
    new.file = current.file.clone();
    if current.state_dir_from_command_line {
        new.state_dir = current.state_dir.clone();
        new.state_dir_from_command_line = true;
    }
    logging::set_level(&new.monitoring.log_level)?;
    let kept = jobs.reload(new);
    if kept.is_empty() {
        tracing::info!("configuration reloaded");
    } else {
        tracing::warn!(
            needs_restart = %kept.join(", "),
            "configuration reloaded; these changed keys take effect only after a restart"
        );
    }
    Ok(kept)
}

async fn stop_all(jobs: &Arc<JobManager>) {
    let unfinished: Vec<_> = jobs
        .list()
        .into_iter()
        .filter(|job| !job.state().is_finished())
        .collect();
    // With checkpoints, interrupted rather than cancelled: their partial
    // work stays and the next start carries them on. Without (a private
    // copyd), nothing would ever resume them: cancel, which cleans up.
    for job in &unfinished {
        if jobs.is_persistent() {
            job.control.interrupt();
        } else {
            let _ = job.cancel();
        }
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while unfinished.iter().any(|job| job.is_being_run()) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The socket a parent handed over as standard input, inetd style: how
/// copyctl starts a private copyd. (Safe code cannot adopt an arbitrary
/// inherited fd number, but it can duplicate stdin.)
pub fn peer_socket_from_stdin() -> Result<std::os::unix::net::UnixStream, String> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|err| err.to_string())?;
    let stat = rustix::fs::fstat(&fd).map_err(|err| err.to_string())?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Socket {
        return Err("standard input is not a socket".into());
    }
    Ok(std::os::unix::net::UnixStream::from(fd))
}
