//! Where copyd logs, and at what level.
//!
//! - To the journal when stderr is connected to it (`JOURNAL_STREAM` names
//!   stderr's device and inode, as systemd sets it), or when stderr is not
//!   a terminal and the journal's socket exists; else to stderr, in colour
//!   only on a terminal (and never with NO_COLOR).
//! - Journal fields carry the names docs/SECURITY.md gives them
//!   (`AUDIT_KIND`, `UID`, `ACTION`, `JOB`...): tracing-journald's default
//!   `F_` prefix is turned off.
//! - The level: RUST_LOG if set, else `[monitoring] log_level`; a reload
//!   changes it (unless RUST_LOG is set, which keeps precedence).

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use tracing_subscriber::{reload, EnvFilter, Registry};

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Whether `JOURNAL_STREAM` ("device:inode") names what stderr is.
fn stderr_is_journal_stream() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Whether logs go to the journal (see the module's comment).
/// `COPYD_LOG=stderr` or `=journal` decides instead (the tests' harness
/// keeps copyd's log in a file on machines that run a journal).
pub fn to_journal() -> bool {
    match std::env::var("COPYD_LOG").as_deref() {
        Ok("stderr") => return false,
        Ok("journal") => return true,
        _ => {}
    }
    stderr_is_journal_stream()
        || (!std::io::stderr().is_terminal() && std::path::Path::new(JOURNAL_SOCKET).exists())
}

fn rust_log() -> Option<String> {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Sets up logging with `level` (a level or filter) unless RUST_LOG says
/// otherwise.
pub fn init_logging(level: &str) {
    use tracing_subscriber::prelude::*;
    let filter = rust_log()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let _ = FILTER.set(handle);
    let registry = tracing_subscriber::registry().with(filter);
    if to_journal() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = registry.with(journald.with_field_prefix(None)).try_init();
            return;
        }
    }
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour),
        )
        .try_init();
}

/// Puts `level` in use (a configuration reload). RUST_LOG, when set, keeps
/// precedence: then nothing changes, and that is said.
pub fn set_level(level: &str) -> Result<(), String> {
    if let Some(filter) = rust_log() {
        tracing::info!(
            rust_log = %filter,
            log_level = level,
            "RUST_LOG is set and keeps precedence over log_level"
        );
        return Ok(());
    }
    let filter = EnvFilter::try_new(level).map_err(|err| err.to_string())?;
    match FILTER.get() {
        Some(handle) => handle.reload(filter).map_err(|err| err.to_string()),
        None => Ok(()),
    }
}
