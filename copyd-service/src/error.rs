//! The typed D-Bus errors of the contract: `org.example.Copyd1.Error.*`.
//! Never a bare string in org.freedesktop.DBus.Error.Failed.

use copyd_engine::{EngineError, ErrorKind};

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.example.Copyd1.Error")]
pub enum Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    InvalidArgument(String),
    NotFound(String),
    AlreadyExists(String),
    NoSpace(String),
    PermissionDenied(String),
    ReadOnly(String),
    NotAuthorized(String),
    NotAuthorizedCanObtain(String),
    /// A rule of the [security] table of the configuration refused it.
    PolicyRefused(String),
    NotSupported(String),
    ChecksumMismatch(String),
    Cancelled(String),
    Failed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The prefix of every error name copyd sends.
pub const ERROR_PREFIX: &str = "org.example.Copyd1.Error.";

impl From<EngineError> for Error {
    fn from(err: EngineError) -> Self {
        let message = err.message;
        match err.kind {
            ErrorKind::InvalidArgument => Error::InvalidArgument(message),
            ErrorKind::NotFound => Error::NotFound(message),
            ErrorKind::AlreadyExists => Error::AlreadyExists(message),
            ErrorKind::NoSpace => Error::NoSpace(message),
            ErrorKind::PermissionDenied => Error::PermissionDenied(message),
            ErrorKind::ReadOnly => Error::ReadOnly(message),
            ErrorKind::NotSupported => Error::NotSupported(message),
            ErrorKind::ChecksumMismatch => Error::ChecksumMismatch(message),
            ErrorKind::Cancelled => Error::Cancelled(message),
            ErrorKind::Failed => Error::Failed(message),
        }
    }
}

/// The full D-Bus error name for an engine error kind.
pub fn error_name(kind: ErrorKind) -> String {
    format!("{ERROR_PREFIX}{}", kind.name())
}

/// What went wrong, in words for people and without any path: what copyd
/// says of a failure to those who may not see the job's paths (the
/// broadcast Completed signal, non-owners reading ErrorMessage).
pub fn summary(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidArgument => "the request was not valid",
        ErrorKind::NotFound => "a file or directory was not found",
        ErrorKind::AlreadyExists => "the destination already exists",
        ErrorKind::NoSpace => "the destination file system is full",
        ErrorKind::PermissionDenied => "permission was denied",
        ErrorKind::ReadOnly => "the destination file system is read-only",
        ErrorKind::NotSupported => "something was not supported here",
        ErrorKind::ChecksumMismatch => "a copy did not match its source",
        ErrorKind::Cancelled => "the job was cancelled",
        ErrorKind::Failed => "the job failed",
    }
}
