//! Who is calling: taken from the bus (or, on a private peer-to-peer
//! connection, from the socket's SO_PEERCRED), never from the message body.
//! Any failure to find out denies; a uid never defaults to 0.
//!
//! And with whose rights a caller's work runs ([`Acting`]): a root copyd
//! acts as the caller (a thread that switched its own credentials, see
//! `copyd_engine::identity`), unless the job is privileged. A copyd that is
//! not root (on the session bus, or a private copyd over a socket pair) is
//! already the caller: it serves only its own user and switches nothing.

use copyd_engine::identity::{self, Credentials};
use copyd_engine::{EngineError, ErrorKind};
use zbus::message::Header;
use zbus::Connection;

use crate::error::Error;

/// With whose rights work runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acting {
    /// As copyd itself: the caller is copyd's own user, or the job is
    /// privileged (polkit said yes to copy-privileged).
    Daemon,
    /// On a thread switched to these credentials.
    Caller(Credentials),
    /// Not at all: copyd cannot take on the caller's identity (why).
    Refuse(String),
}

impl Acting {
    /// Runs `f` with these rights (blocking: call it off the async threads).
    pub fn run<T, F>(&self, f: F) -> Result<T, EngineError>
    where
        F: FnOnce() -> Result<T, EngineError> + Send,
        T: Send,
    {
        match self {
            Acting::Daemon => f(),
            Acting::Caller(creds) => identity::run_as(creds, f),
            Acting::Refuse(why) => Err(EngineError::new(ErrorKind::PermissionDenied, why.clone())),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Acting::Daemon => format!("as copyd (uid {})", own_uid()),
            Acting::Caller(creds) => format!("as uid {} gid {}", creds.uid, creds.gid),
            Acting::Refuse(_) => "refused".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// All groups, primary and supplementary, as the bus reports them
    /// (UnixGroupIDs, sorted: the bus does not say which one is primary).
    pub gids: Vec<u32>,
    pub pid: Option<u32>,
    /// The unique bus name, when the call came through a bus.
    pub bus_name: Option<String>,
    /// With whose rights this caller's jobs run.
    pub acting: Acting,
}

/// copyd's own effective uid.
pub fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn deny(reason: impl std::fmt::Display) -> Error {
    Error::NotAuthorized(format!("cannot identify the caller: {reason}"))
}

/// The primary group of `uid` in /etc/passwd, if it is one of `gids` (the
/// bus vouches for the groups; passwd only picks which one new files get).
/// Otherwise the first of `gids`. None when there are no groups.
fn primary_gid(uid: u32, gids: &[u32]) -> Option<u32> {
    let from_passwd = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() > 3 && fields[2].parse() == Ok(uid))
                    .then(|| fields[3].parse::<u32>().ok())
                    .flatten()
            })
        });
    match from_passwd {
        Some(gid) if gids.contains(&gid) => Some(gid),
        _ => gids.first().copied(),
    }
}

/// How a root copyd acts for `uid` with `gids`; how any other copyd does.
fn natural_acting(uid: u32, gids: Option<&[u32]>) -> Acting {
    let own = own_uid();
    if uid == own {
        return Acting::Daemon;
    }
    if own != 0 {
        return Acting::Refuse(format!(
            "copyd runs as uid {own} and cannot act as uid {uid}"
        ));
    }
    let Some(gids) = gids.filter(|g| !g.is_empty()) else {
        return Acting::Refuse(format!(
            "the groups of uid {uid} are unknown, so copyd cannot act as it"
        ));
    };
    match primary_gid(uid, gids) {
        Some(gid) => Acting::Caller(Credentials {
            uid,
            gid,
            groups: gids.to_vec(),
        }),
        None => Acting::Refuse(format!("uid {uid} has no group")),
    }
}

impl Caller {
    /// The caller of a job recovered from a checkpoint: as recorded when
    /// the job was made (the checkpoint lives in copyd's private, checksummed
    /// state). A job without recorded groups cannot be run as its caller and
    /// is refused when it runs, never run as root.
    pub fn recovered(uid: u32, gids: Vec<u32>, pid: Option<u32>, privileged: bool) -> Caller {
        let acting = if privileged {
            Acting::Daemon
        } else {
            natural_acting(uid, Some(&gids))
        };
        Caller {
            uid,
            gids,
            pid,
            bus_name: None,
            acting,
        }
    }

    /// Whether this caller's jobs run with copyd's own rights although the
    /// caller is someone else (polkit granted copy-privileged).
    pub fn is_privileged(&self) -> bool {
        matches!(self.acting, Acting::Daemon) && !self.is_own_user()
    }

    /// Whether the caller is copyd's own user (root calling a root copyd,
    /// or anyone calling their own session/private copyd).
    pub fn is_own_user(&self) -> bool {
        self.uid == own_uid()
    }
}

/// Identifies the sender of the message whose header is `header`.
pub async fn identify(connection: &Connection, header: &Header<'_>) -> Result<Caller, Error> {
    // Every method that acts for someone asks who calls: the one place to
    // count calls by method.
    let method = header.member().map_or("?", |m| m.as_str()).to_owned();
    metrics::counter!("copyd_dbus_calls_total", "method" => method).increment(1);
    if !connection.is_bus() {
        // A private peer-to-peer connection: SO_PEERCRED of the socket.
        let creds = connection.peer_creds().await.map_err(deny)?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| deny("the peer has no uid"))?;
        let gids = creds.unix_group_ids().cloned();
        return Ok(Caller {
            uid,
            acting: natural_acting(uid, gids.as_deref()),
            gids: gids.unwrap_or_default(),
            pid: creds.process_id(),
            bus_name: None,
        });
    }
    let sender = header
        .sender()
        .ok_or_else(|| deny("the message has no sender"))?;
    let key = (connection.server_guid().to_string(), sender.to_string());
    if let Some(caller) = known_callers().lock().unwrap().get(&key) {
        return Ok(caller.clone());
    }
    let dbus = zbus::fdo::DBusProxy::new(connection).await.map_err(deny)?;
    // Fails when the sender is gone already: then it is denied, never
    // taken for anyone (unique names are not reused on a bus).
    let creds = dbus
        .get_connection_credentials(sender.clone().into())
        .await
        .map_err(deny)?;
    let uid = creds
        .unix_user_id()
        .ok_or_else(|| deny("the bus did not say its uid"))?;
    let gids = creds.unix_group_ids().cloned();
    let caller = Caller {
        uid,
        acting: natural_acting(uid, gids.as_deref()),
        gids: gids.unwrap_or_default(),
        pid: creds.process_id(),
        bus_name: Some(sender.to_string()),
    };
    let mut known = known_callers().lock().unwrap();
    if known.len() >= KNOWN_CALLERS_MAX {
        known.clear();
    }
    known.insert(key, caller.clone());
    Ok(caller)
}

/// Callers the bus has already described, by (bus, unique name). A unique
/// name is never reused on a bus, and the bus takes a connection's
/// credentials when it connects, so an answer never goes stale; keeping it
/// saves a round trip to the bus per call (a client's GetAll of a job asked
/// four times, once per path property). Emptied when it fills.
type CallerKey = (String, String);
const KNOWN_CALLERS_MAX: usize = 1024;

fn known_callers() -> &'static std::sync::Mutex<std::collections::HashMap<CallerKey, Caller>> {
    static KNOWN: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<CallerKey, Caller>>,
    > = std::sync::OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_groups_means_no_switch_and_never_root() {
        if own_uid() != 0 {
            assert!(matches!(
                natural_acting(own_uid() + 1, Some(&[1])),
                Acting::Refuse(_)
            ));
            assert_eq!(natural_acting(own_uid(), None), Acting::Daemon);
            return;
        }
        assert!(matches!(natural_acting(1000, None), Acting::Refuse(_)));
        assert!(matches!(natural_acting(1000, Some(&[])), Acting::Refuse(_)));
        assert!(matches!(
            Caller::recovered(1000, Vec::new(), None, false).acting,
            Acting::Refuse(_)
        ));
        assert!(matches!(
            Caller::recovered(1000, vec![1000], None, false).acting,
            Acting::Caller(_)
        ));
        assert_eq!(
            Caller::recovered(1000, Vec::new(), None, true).acting,
            Acting::Daemon
        );
        assert_eq!(natural_acting(0, None), Acting::Daemon);
        match natural_acting(1000, Some(&[4, 100])) {
            Acting::Caller(creds) => {
                assert_eq!(creds.uid, 1000);
                assert!([4, 100].contains(&creds.gid));
                assert_eq!(creds.groups, vec![4, 100]);
            }
            other => panic!("{other:?}"),
        }
    }
}
