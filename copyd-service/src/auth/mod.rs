//! Deciding whether a caller may do what it asks: the action table
//! ([`actions`]), polkit ([`polkit`]), and the rule tying them together
//! ([`authorize`]). Every decision is an audit event.

pub mod actions;
pub mod polkit;

use std::path::Path;

use zbus::message::{Flags, Header};
use zbus::Connection;

use crate::audit::{self, Kind};
use crate::caller::{own_uid, Caller};
use crate::error::{Error, Result};
pub use actions::{Action, Rule};

/// Decides whether `caller` may do `action` (on `paths`, for the record).
///
/// - The caller is copyd's own user: yes, without asking (it has copyd's
///   rights anyway; polkit itself always says yes for uid 0). This is every
///   call to a session or private copyd, and root calling the system copyd.
/// - copyd is not root and the caller is someone else: no (it cannot act as
///   them, and has no business using its own rights for them).
/// - A private peer-to-peer connection to a root copyd: there is no bus,
///   so no polkit subject; only `copy` (as the caller) is allowed.
/// - Otherwise polkit decides, on the bus connection copyd serves on, for
///   the subject `system-bus-name` = the sender's unique name. Interactive
///   authentication only when the message carries
///   ALLOW_INTERACTIVE_AUTHORIZATION. polkit unreachable or failing: no.
pub async fn authorize(
    connection: &Connection,
    header: &Header<'_>,
    caller: &Caller,
    action: Action,
    paths: &[&Path],
) -> Result<()> {
    let event = |result: &str| {
        if result != "authorized" {
            metrics::counter!("copyd_auth_denials_total", "action" => action.id()).increment(1);
        }
        audit::Event::new(Kind::Authorization, action.id(), result)
            .caller(caller)
            .paths(paths.iter().copied())
    };
    if caller.is_own_user() {
        event("authorized")
            .message("the caller is copyd's own user")
            .record();
        return Ok(());
    }
    let own = own_uid();
    if own != 0 {
        let message = format!("copyd runs as uid {own} and serves only that user");
        event("not-authorized").message(&message).record();
        return Err(Error::NotAuthorized(message));
    }
    let Some(bus_name) = caller.bus_name.as_deref().filter(|_| connection.is_bus()) else {
        if action == Action::Copy {
            event("authorized")
                .message("private connection: copy as the caller")
                .record();
            return Ok(());
        }
        let message = format!(
            "{} needs polkit, which a private connection has not",
            action.id()
        );
        event("not-authorized").message(&message).record();
        return Err(Error::NotAuthorized(message));
    };
    let interactive = header
        .primary()
        .flags()
        .contains(Flags::ALLOW_INTERACTIVE_AUTH);
    match polkit::check(connection, bus_name, action.id(), interactive).await {
        polkit::Answer::Authorized => {
            event("authorized").message("polkit said yes").record();
            Ok(())
        }
        polkit::Answer::Challenge => {
            let message = format!(
                "{} needs authentication{}",
                action.id(),
                if interactive {
                    ""
                } else {
                    " (call with interactive authorization allowed, e.g. from a session with a polkit agent)"
                }
            );
            event("challenge").message(&message).record();
            Err(Error::NotAuthorizedCanObtain(message))
        }
        polkit::Answer::NotAuthorized => {
            let message = format!(
                "polkit does not allow {} for uid {}",
                action.id(),
                caller.uid
            );
            event("not-authorized").message(&message).record();
            Err(Error::NotAuthorized(message))
        }
        polkit::Answer::Unavailable(why) => {
            metrics::counter!("copyd_polkit_errors_total").increment(1);
            crate::alerts::polkit_unreachable(&why);
            let message = format!("cannot ask polkit about {} ({why}): denied", action.id());
            event("not-authorized").message(&message).record();
            Err(Error::NotAuthorized(message))
        }
    }
}

/// Records a denial that happened before any action was decided (the
/// caller could not be identified, ...).
pub fn record_denial(method: &str, err: &Error, header: &Header<'_>) {
    let mut event = audit::Event::new(Kind::Denied, method, "denied").message(err.to_string());
    event.bus_name = header.sender().map(|s| s.to_string());
    event.record();
}
