//! Finding copyd: an explicit address, then the system bus, then the session
//! bus, and where none serves copyd, a private copyd started over a socket
//! pair (peer-to-peer D-Bus: the same contract, so the same code paths).

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

use zbus::Connection;

use crate::proxy::ManagerProxy;

pub const BUS_NAME: &str = "org.example.Copyd1";

/// The hidden subcommand under which copyctl runs as a private copyd.
pub const PRIVATE_DAEMON_COMMAND: &str = "__private-copyd";

pub struct Service {
    pub connection: Connection,
    /// The private copyd, when copyctl started one.
    pub private: Option<Child>,
}

/// Whether `connection`'s bus has copyd running or able to start.
async fn serves_copyd(connection: &Connection) -> bool {
    let Ok(dbus) = zbus::fdo::DBusProxy::new(connection).await else {
        return false;
    };
    let name = zbus::names::BusName::from_static_str(BUS_NAME).expect("a valid bus name");
    if dbus.name_has_owner(name).await.unwrap_or(false) {
        return true;
    }
    dbus.list_activatable_names()
        .await
        .is_ok_and(|names| names.iter().any(|n| n.as_str() == BUS_NAME))
}

async fn try_bus(builder: zbus::connection::Builder<'_>) -> Option<Connection> {
    let connection = builder.build().await.ok()?;
    serves_copyd(&connection).await.then_some(connection)
}

pub async fn find(address: Option<&str>) -> Result<Service, String> {
    find_saying(address, true).await
}

/// [`find`], saying or not that a private copyd was started (cp and mv
/// fronts stay silent, as cp is).
pub async fn find_saying(address: Option<&str>, announce: bool) -> Result<Service, String> {
    if let Some(address) = address {
        let connection = zbus::connection::Builder::address(address)
            .build()
            .await
            .map_err(|err| format!("cannot connect to {address}: {err}"))?;
        return Ok(Service {
            connection,
            private: None,
        });
    }
    if let Some(connection) = try_bus(zbus::connection::Builder::system()).await {
        return Ok(Service {
            connection,
            private: None,
        });
    }
    if let Some(connection) = try_bus(zbus::connection::Builder::session()).await {
        return Ok(Service {
            connection,
            private: None,
        });
    }
    start_private(announce).await
}

/// Runs this very executable as a private copyd, handing it one end of a
/// socket pair as its standard input.
async fn start_private(announce: bool) -> Result<Service, String> {
    let (ours, theirs) =
        UnixStream::pair().map_err(|err| format!("cannot make a socket pair: {err}"))?;
    let exe =
        std::env::current_exe().map_err(|err| format!("cannot find copyctl itself: {err}"))?;
    let child = Command::new(exe)
        .arg(PRIVATE_DAEMON_COMMAND)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .map_err(|err| format!("cannot start a private copyd: {err}"))?;
    if announce {
        eprintln!(
            "copyctl: no copyd on the system or session bus; using a private copyd (pid {})",
            child.id()
        );
    }
    let connection = zbus::connection::Builder::unix_stream(ours)
        .p2p()
        .build()
        .await
        .map_err(|err| format!("cannot talk to the private copyd: {err}"))?;
    Ok(Service {
        connection,
        private: Some(child),
    })
}

impl Service {
    pub async fn manager(&self) -> Result<ManagerProxy<'static>, String> {
        ManagerProxy::builder(&self.connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|err| err.to_string())
    }
}

/// Runs the private copyd (the hidden subcommand).
pub fn run_private_daemon() -> std::process::ExitCode {
    copyd_service::init_logging("warn");
    let socket = match copyd_service::peer_socket_from_stdin() {
        Ok(socket) => socket,
        Err(err) => {
            eprintln!("copyctl: {PRIVATE_DAEMON_COMMAND}: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut config = copyd_service::Config {
        // One client, who reads a job's end state right after it ends.
        job_retention_seconds: 60,
        ..Default::default()
    };
    // A private copyd has its one client's own rights and no others: the
    // rule that keeps a system service's callers out of /proc, /sys and
    // /dev unless privileged guards nothing here, and would refuse what the
    // user may do anyway (`cp /proc/cpuinfo .`, a copy into /dev/shm).
    config.security.require_privilege_for_system = false;
    match runtime.block_on(copyd_service::serve(
        copyd_service::Endpoint::Peer(socket),
        config,
    )) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("copyctl: private copyd: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
