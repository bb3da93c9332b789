//! The audit trail: one structured event for every authorization decision,
//! every denial, every privileged job and every refusal by the [security]
//! rules of the configuration.
//!
//! Each event goes to tracing with the target `copyd::audit` (so with
//! journald its fields become journal fields: UID, PID, ACTION, RESULT, …)
//! and, when the configuration sets `audit_log`, is appended as one JSON
//! line to that file. Writing is synchronous, one `write` of a whole line
//! to a file opened with O_APPEND, under a mutex: safe to call from any
//! thread, async or not, and lines never interleave.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

/// The tracing target of audit events.
pub const TARGET: &str = "copyd::audit";

/// What kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// polkit (or the same-user rule) decided on an action.
    Authorization,
    /// A request was refused: unidentifiable caller, not authorized.
    Denied,
    /// A [security] rule refused a request.
    PolicyRefused,
    /// A job runs as root for a caller (option `privileged`, polkit said yes).
    PrivilegedJob,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// µs since the epoch.
    pub time_us: u64,
    pub kind: Kind,
    /// The caller's uid, when known.
    pub uid: Option<u32>,
    pub pid: Option<u32>,
    /// The caller's unique bus name, when it came through a bus.
    pub bus_name: Option<String>,
    /// The D-Bus method, or the polkit action id.
    pub action: String,
    /// Paths concerned (lossy UTF-8).
    pub paths: Vec<String>,
    /// "authorized", "not-authorized", "challenge", "refused", "started", …
    pub result: String,
    pub message: String,
}

impl Event {
    pub fn new(kind: Kind, action: impl Into<String>, result: impl Into<String>) -> Event {
        Event {
            time_us: crate::jobs::now_us(),
            kind,
            uid: None,
            pid: None,
            bus_name: None,
            action: action.into(),
            paths: Vec::new(),
            result: result.into(),
            message: String::new(),
        }
    }

    pub fn caller(mut self, caller: &crate::caller::Caller) -> Event {
        self.uid = Some(caller.uid);
        self.pid = caller.pid;
        self.bus_name = caller.bus_name.clone();
        self
    }

    pub fn paths<'a>(mut self, paths: impl IntoIterator<Item = &'a Path>) -> Event {
        self.paths = paths
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        self
    }

    pub fn message(mut self, message: impl Into<String>) -> Event {
        self.message = message.into();
        self
    }

    /// Sends the event to tracing and the audit file.
    pub fn record(self) {
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let uid = self.uid.map_or(-1, i64::from);
        let pid = self.pid.map_or(-1, i64::from);
        let paths = self.paths.join(" ");
        let bus_name = self.bus_name.as_deref().unwrap_or("");
        if self.kind == Kind::Authorization && self.result == "authorized" {
            tracing::info!(target: TARGET, audit_kind = %kind, uid, pid, bus_name, action = %self.action, result = %self.result, paths = %paths, "{}", self.message);
        } else {
            tracing::warn!(target: TARGET, audit_kind = %kind, uid, pid, bus_name, action = %self.action, result = %self.result, paths = %paths, "{}", self.message);
        }
        if let Some(sink) = SINK.get() {
            sink.write(&self);
        }
    }
}

struct Sink {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl Sink {
    fn open(path: &Path) -> std::io::Result<File> {
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(parent)?;
        }
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
    }

    fn write(&self, event: &Event) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            match Self::open(&self.path) {
                Ok(opened) => *file = Some(opened),
                Err(err) => {
                    tracing::error!(path = %self.path.display(), %err, "cannot open the audit log");
                    return;
                }
            }
        }
        if let Some(f) = file.as_mut() {
            if let Err(err) = f.write_all(&line) {
                tracing::error!(path = %self.path.display(), %err, "cannot write the audit log");
                // Reopen next time (the file may have been rotated away).
                *file = None;
            }
        }
    }
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sets the audit file (config `audit_log`); events before this, or without
/// it, go to tracing only. Opens the file now, so a bad path shows at start.
pub fn init(path: Option<&Path>) -> Result<(), String> {
    let Some(path) = path else {
        return Ok(());
    };
    let file = Sink::open(path)
        .map_err(|err| format!("cannot open the audit log {}: {err}", path.display()))?;
    let _ = SINK.set(Sink {
        path: path.to_path_buf(),
        file: Mutex::new(Some(file)),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_one_json_object() {
        let event = Event::new(Kind::Denied, "org.example.copyd1.copy", "not-authorized")
            .paths([Path::new("/a"), Path::new("/b")])
            .message("no");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "denied");
        assert_eq!(json["paths"][1], "/b");
        assert_eq!(json["uid"], serde_json::Value::Null);
    }
}
