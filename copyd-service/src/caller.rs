//! Who is calling: taken from the bus (or, on a private peer-to-peer
//! connection, from the socket's SO_PEERCRED), never from the message body.
//! Any failure to find out denies; a uid never defaults to 0.

use zbus::message::Header;
use zbus::Connection;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub pid: Option<u32>,
    /// The unique bus name, when the call came through a bus.
    pub bus_name: Option<String>,
}

fn deny(reason: impl std::fmt::Display) -> Error {
    Error::NotAuthorized(format!("cannot identify the caller: {reason}"))
}

/// Identifies the sender of the message whose header is `header`.
pub async fn identify(connection: &Connection, header: &Header<'_>) -> Result<Caller, Error> {
    if !connection.is_bus() {
        let creds = connection.peer_creds().await.map_err(deny)?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| deny("the peer has no uid"))?;
        return Ok(Caller {
            uid,
            pid: creds.process_id(),
            bus_name: None,
        });
    }
    let sender = header
        .sender()
        .ok_or_else(|| deny("the message has no sender"))?;
    let dbus = zbus::fdo::DBusProxy::new(connection).await.map_err(deny)?;
    let creds = dbus
        .get_connection_credentials(sender.clone().into())
        .await
        .map_err(deny)?;
    let uid = creds
        .unix_user_id()
        .ok_or_else(|| deny("the bus did not say its uid"))?;
    Ok(Caller {
        uid,
        pid: creds.process_id(),
        bus_name: Some(sender.to_string()),
    })
}

/// Until copyd can act with a caller's own file-system identity, it refuses
/// to work for anyone but the user it runs as: a root daemon must never copy
/// a file for a user who could not read it.
pub fn require_same_user(caller: &Caller) -> Result<(), Error> {
    let own = rustix::process::geteuid().as_raw();
    if caller.uid == own {
        return Ok(());
    }
    Err(Error::NotAuthorized(format!(
        "copyd runs as uid {own} and does not yet act on behalf of other users (caller uid {})",
        caller.uid
    )))
}
