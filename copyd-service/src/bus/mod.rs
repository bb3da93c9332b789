//! copyd on D-Bus: connecting (system bus, session bus, an address, or a
//! private peer-to-peer socket), serving the objects, taking the name.

pub mod job;
pub mod manager;

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use zbus::connection::Builder;
use zbus::fdo::{ObjectManager, RequestNameFlags, RequestNameReply};
use zbus::{Connection, Guid, OwnedObjectPath};

use crate::auth::actions;
use crate::jobs::{Job, JobManager, JobState};
use manager::ManagerObject;

pub const BUS_NAME: &str = "org.example.Copyd1";
pub const MANAGER_PATH: &str = "/org/example/Copyd1";

/// The object path of job `id`.
pub fn job_path(id: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("{MANAGER_PATH}/jobs/{id}")).expect("job ids are numeric")
}

/// Where copyd listens.
#[derive(Debug)]
pub enum Endpoint {
    System,
    Session,
    Address(String),
    /// One client on the other end of a socket: a private copyd.
    Peer(UnixStream),
}

/// Connects, serves the manager (with its ObjectManager) and the jobs
/// recovered from checkpoints, and, on a bus, takes the well-known name only
/// once the objects are there to answer. Interrupted jobs resume afterwards
/// when the configuration says so.
pub async fn connect(
    endpoint: Endpoint,
    jobs: Arc<JobManager>,
    observer: Arc<crate::observe::Observer>,
    recovered: Vec<Arc<Job>>,
) -> zbus::Result<Connection> {
    let (builder, is_bus) = match endpoint {
        Endpoint::System => (Builder::system(), true),
        Endpoint::Session => (Builder::session(), true),
        Endpoint::Address(address) => (Builder::address(address.as_str()), true),
        Endpoint::Peer(stream) => (
            Builder::unix_stream(stream).server(Guid::generate()).p2p(),
            false,
        ),
    };
    let connection = builder
        .serve_at(
            MANAGER_PATH,
            ManagerObject {
                jobs: jobs.clone(),
                observer,
            },
        )
        .serve_at(MANAGER_PATH, ObjectManager)
        .build()
        .await?;
    tokio::spawn(forward_alerts(connection.clone()));
    let mut to_resume = Vec::new();
    for job in recovered {
        job::publish(&connection, &jobs, &job).await?;
        match job.state() {
            JobState::Interrupted if jobs.config().auto_resume => to_resume.push(job),
            // A paused job's runner waits, holding no slot, for Resume.
            JobState::Paused => jobs.start(job),
            _ => {}
        }
    }
    if is_bus {
        let reply = connection
            .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
            .await?;
        if !matches!(
            reply,
            RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner
        ) {
            return Err(zbus::Error::NameTaken);
        }
    }
    for job in to_resume {
        tracing::info!(job = %job.id, "resuming interrupted job");
        if let Err(err) = jobs.resume(&job) {
            tracing::warn!(job = %job.id, %err, "could not resume");
        }
    }
    Ok(connection)
}

/// Turns the alert book's changes into AlertRaised, AlertCleared and the
/// Alerts property's PropertiesChanged.
async fn forward_alerts(connection: Connection) {
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = crate::alerts::subscribe();
    let emitter = zbus::object_server::SignalEmitter::new(&connection, MANAGER_PATH)
        .expect("the manager path is valid");
    loop {
        let sent = match changes.recv().await {
            Ok(crate::alerts::AlertChange::Raised(alert)) => {
                ManagerObject::alert_raised(&emitter, &alert.id, alert.severity, &alert.message)
                    .await
            }
            Ok(crate::alerts::AlertChange::Cleared(id)) => {
                ManagerObject::alert_cleared(&emitter, &id).await
            }
            // Missed changes: the property below still says what is.
            Err(RecvError::Lagged(_)) => Ok(()),
            Err(RecvError::Closed) => break,
        };
        if let Err(err) = sent {
            tracing::debug!(%err, "could not send an alert signal");
        }
        let alerts = crate::health::alert_tuples();
        properties_changed(
            &emitter,
            actions::MANAGER_INTERFACE,
            std::collections::HashMap::from([("Alerts", zbus::Variant::from(alerts))]),
        )
        .await;
    }
}

/// Sends one PropertiesChanged for several properties of `interface`, so
/// that a client sees them change together.
pub(crate) async fn properties_changed(
    emitter: &zbus::object_server::SignalEmitter<'_>,
    interface: &'static str,
    changed: std::collections::HashMap<&str, zbus::Variant<'_>>,
) {
    let interface = zbus::names::InterfaceName::from_static_str_unchecked(interface);
    let invalidated = std::borrow::Cow::Borrowed(&[][..]);
    if let Err(err) =
        zbus::fdo::Properties::properties_changed(emitter, interface, changed, invalidated).await
    {
        tracing::debug!(%err, "could not send PropertiesChanged");
    }
}
