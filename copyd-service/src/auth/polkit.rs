//! Asking polkit: org.freedesktop.PolicyKit1.Authority.CheckAuthorization
//! on the bus copyd serves on (a local proxy: zbus_polkit does not support
//! zbus 6).

use std::collections::HashMap;
use std::time::Duration;

use zbus::{Connection, Variant};

/// CheckAuthorization flag: polkit may ask the user to authenticate.
pub const ALLOW_USER_INTERACTION: u32 = 0x1;

#[zbus::proxy(
    interface = "org.freedesktop.PolicyKit1.Authority",
    default_service = "org.freedesktop.PolicyKit1",
    default_path = "/org/freedesktop/PolicyKit1/Authority"
)]
pub trait Authority {
    /// Returns (is_authorized, is_challenge, details).
    #[allow(clippy::type_complexity)]
    fn check_authorization(
        &self,
        subject: &(&str, HashMap<&str, Variant<'_>>),
        action_id: &str,
        details: &HashMap<&str, &str>,
        flags: u32,
        cancellation_id: &str,
    ) -> zbus::Result<(bool, bool, HashMap<String, String>)>;
}

/// polkit's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Authorized,
    /// Authorized after the subject authenticates (an agent could ask).
    Challenge,
    NotAuthorized,
    /// polkit could not be asked, or failed: a denial too.
    Unavailable(String),
}

/// Asks polkit whether the client `bus_name` (its unique name: polkit
/// looks its uid and pid up itself, race-free) may do `action_id`.
pub async fn check(
    connection: &Connection,
    bus_name: &str,
    action_id: &str,
    interactive: bool,
) -> Answer {
    let proxy = AuthorityProxy::builder(connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await;
    let proxy = match proxy {
        Ok(proxy) => proxy,
        Err(err) => return Answer::Unavailable(err.to_string()),
    };
    let subject = (
        "system-bus-name",
        HashMap::from([("name", Variant::from(bus_name))]),
    );
    let flags = if interactive {
        ALLOW_USER_INTERACTION
    } else {
        0
    };
    // An authentication dialog may take the user a while; a plain answer
    // does not.
    let limit = Duration::from_secs(if interactive { 300 } else { 30 });
    let details = HashMap::new();
    let call = proxy.check_authorization(&subject, action_id, &details, flags, "");
    match tokio::time::timeout(limit, call).await {
        Ok(Ok((true, _, _))) => Answer::Authorized,
        Ok(Ok((false, true, _))) => Answer::Challenge,
        Ok(Ok((false, false, _))) => Answer::NotAuthorized,
        Ok(Err(err)) => Answer::Unavailable(err.to_string()),
        Err(_) => Answer::Unavailable(format!("no answer within {limit:?}")),
    }
}
