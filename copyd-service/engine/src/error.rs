//! Typed engine errors. The kinds map one to one onto the D-Bus error names
//! `org.example.Copyd1.Error.<Kind>`, so the service layer never has to guess.

use std::io;
use std::path::Path;

/// What kind of failure this is; the name is the D-Bus error's last element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    NoSpace,
    PermissionDenied,
    /// The destination is on a read-only file system (EROFS): not a
    /// question of the caller's permissions, and no authorization helps.
    ReadOnly,
    NotSupported,
    /// A copy read back from its storage did not match its source.
    ChecksumMismatch,
    Cancelled,
    Failed,
}

impl ErrorKind {
    /// Every kind, for reading one back by its name.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::NoSpace,
        ErrorKind::PermissionDenied,
        ErrorKind::ReadOnly,
        ErrorKind::NotSupported,
        ErrorKind::ChecksumMismatch,
        ErrorKind::Cancelled,
        ErrorKind::Failed,
    ];

    /// The kind whose [`Self::name`] is `name`.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The last element of the D-Bus error name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::NoSpace => "NoSpace",
            ErrorKind::PermissionDenied => "PermissionDenied",
            ErrorKind::ReadOnly => "ReadOnly",
            ErrorKind::NotSupported => "NotSupported",
            ErrorKind::ChecksumMismatch => "ChecksumMismatch",
            ErrorKind::Cancelled => "Cancelled",
            ErrorKind::Failed => "Failed",
        }
    }

    /// The kind an OS error stands for.
    pub fn of_io(err: &io::Error) -> ErrorKind {
        use rustix::io::Errno;
        let Some(errno) = err.raw_os_error().map(Errno::from_raw_os_error) else {
            return match err.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                _ => ErrorKind::Failed,
            };
        };
        match errno {
            Errno::NOENT => ErrorKind::NotFound,
            Errno::EXIST | Errno::NOTEMPTY => ErrorKind::AlreadyExists,
            Errno::NOSPC | Errno::DQUOT | Errno::FBIG => ErrorKind::NoSpace,
            Errno::ACCESS | Errno::PERM => ErrorKind::PermissionDenied,
            // Named apart: "PermissionDenied: ... Read-only file system" sent
            // people looking at file modes when a mount (or a service's
            // sandbox) was the cause.
            Errno::ROFS => ErrorKind::ReadOnly,
            Errno::OPNOTSUPP | Errno::NOSYS => ErrorKind::NotSupported,
            // A name or path longer than the kernel takes is bad input.
            Errno::NAMETOOLONG => ErrorKind::InvalidArgument,
            _ => ErrorKind::Failed,
        }
    }
}

/// An error with its kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub kind: ErrorKind,
    pub message: String,
    /// The OS error behind it, when there was one.
    pub os_error: Option<i32>,
    /// It concerns one source file only (vanished, unreadable): the transfer
    /// goes on without that file and reports it at the end.
    pub per_file: bool,
}

impl EngineError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        EngineError {
            kind,
            message: message.into(),
            os_error: None,
            per_file: false,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "the job was cancelled")
    }

    /// An OS error about `path`, doing `what` ("open", "read", ...).
    pub fn io(what: &str, path: &Path, err: &io::Error) -> Self {
        EngineError {
            os_error: err.raw_os_error(),
            ..Self::new(
                ErrorKind::of_io(err),
                format!("cannot {what} {}: {err}", path.display()),
            )
        }
    }

    /// Marks the error as one of a single source file, when it is of a kind
    /// that allows going on with the others (the file is gone or unreadable).
    pub fn of_one_source_file(mut self) -> Self {
        self.per_file = matches!(self.kind, ErrorKind::NotFound | ErrorKind::PermissionDenied);
        self
    }

    /// Whether the OS error behind this one was `errno`.
    pub fn is_os_error(&self, errno: rustix::io::Errno) -> bool {
        self.os_error == Some(errno.raw_os_error())
    }
}

impl From<rustix::io::Errno> for ErrorKind {
    fn from(errno: rustix::io::Errno) -> Self {
        ErrorKind::of_io(&io::Error::from(errno))
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_file_system_is_named_as_such_not_as_permission() {
        let erofs = io::Error::from_raw_os_error(rustix::io::Errno::ROFS.raw_os_error());
        assert_eq!(ErrorKind::of_io(&erofs), ErrorKind::ReadOnly);
        let err = EngineError::io("create", Path::new("/usr/local/bin/x"), &erofs);
        assert_eq!(err.kind.name(), "ReadOnly");
        // EACCES and EPERM stay what they were.
        let eacces = io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error());
        assert_eq!(ErrorKind::of_io(&eacces), ErrorKind::PermissionDenied);
    }
}
