//! Acting as another user: running work on a thread whose own credentials
//! are the caller's, so the kernel applies the caller's rights to every
//! open, create, rename and unlink.
//!
//! On Linux credentials belong to threads; the C library's `setresuid` and
//! friends broadcast the change to every thread of the process (through a
//! signal), which is exactly what copyd must not do. rustix's
//! `rustix::thread::set_thread_*` are the raw per-thread system calls, so
//! only the dedicated thread [`run_as`] starts changes identity. Threads it
//! creates (the parallel workers of a transfer) inherit its credentials.
//!
//! The switch keeps the saved uid/gid 0, so the thread could switch back;
//! it never does: it ends when the work ends. The effective uid becomes the
//! caller's, which also sets the file-system uid, and moving the effective
//! uid away from 0 clears the thread's effective capabilities (no
//! `CAP_DAC_OVERRIDE`, `CAP_FOWNER`, `CAP_CHOWN`, `CAP_FSETID` …).

use rustix::process::{Gid, Uid};

use crate::error::{EngineError, ErrorKind, Result};

/// Whose rights a piece of work runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    /// The effective (primary) group: the group new files get.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// -1 means "leave unchanged" to the set*id calls: never an identity.
const INVALID_ID: u32 = u32::MAX;

fn refused(message: String) -> EngineError {
    EngineError::new(ErrorKind::PermissionDenied, message)
}

impl Credentials {
    fn check(&self) -> Result<()> {
        if self.uid == INVALID_ID || self.gid == INVALID_ID || self.groups.contains(&INVALID_ID) {
            return Err(refused(format!(
                "refusing to act as an invalid identity {self:?}"
            )));
        }
        Ok(())
    }
}

/// Switches the calling thread (and only it) to `creds`. Order matters:
/// groups first, while the thread still has CAP_SETGID, then the uid.
fn switch_thread(creds: &Credentials) -> Result<()> {
    creds.check()?;
    let groups: Vec<Gid> = creds.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    let failed = |what: &str, errno: rustix::io::Errno| {
        refused(format!(
            "cannot act as uid {} gid {}: {what} failed: {errno}",
            creds.uid, creds.gid
        ))
    };
    rustix::thread::set_thread_res_gid(None, Gid::from_raw(creds.gid), None)
        .map_err(|e| failed("setresgid", e))?;
    rustix::thread::set_thread_groups(&groups).map_err(|e| failed("setgroups", e))?;
    rustix::thread::set_thread_res_uid(None, Uid::from_raw(creds.uid), None)
        .map_err(|e| failed("setresuid", e))?;
    Ok(())
}

/// What the calling thread is now, read back from the kernel.
fn current() -> Result<Credentials> {
    let mut groups: Vec<u32> = rustix::process::getgroups()
        .map_err(|errno| refused(format!("cannot read the thread's groups: {errno}")))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(Credentials {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        groups,
    })
}

/// The file-system uid and gid of the calling thread from
/// /proc/thread-self/status, where /proc is there to ask.
fn fs_ids() -> Option<(u32, u32)> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let field = |name: &str| -> Option<u32> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        // "Uid:\treal\teffective\tsaved\tfilesystem"
        line.split_whitespace().nth(4)?.parse().ok()
    };
    Some((field("Uid:")?, field("Gid:")?))
}

/// Checks that the calling thread really is `creds` now.
fn verify(creds: &Credentials) -> Result<()> {
    let now = current()?;
    let mut want_groups = creds.groups.clone();
    want_groups.sort_unstable();
    want_groups.dedup();
    if now.uid != creds.uid || now.gid != creds.gid || now.groups != want_groups {
        return Err(refused(format!(
            "the identity switch did not take: wanted {creds:?}, the thread is {now:?}"
        )));
    }
    if let Some((fsuid, fsgid)) = fs_ids() {
        if fsuid != creds.uid || fsgid != creds.gid {
            return Err(refused(format!(
                "the identity switch did not take: file-system ids are {fsuid}:{fsgid}, wanted {}:{}",
                creds.uid, creds.gid
            )));
        }
    }
    Ok(())
}

/// Runs `f` on a new thread that first switches its own credentials to
/// `creds` and checks the switch took; refuses (PermissionDenied) without
/// running `f` if it did not. Blocks until `f` returns. Threads `f` spawns
/// inherit the credentials; the calling thread's never change.
pub fn run_as<T, F>(creds: &Credentials, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name(format!("copyd-as-{}", creds.uid))
            .spawn_scoped(scope, || {
                switch_thread(creds)?;
                verify(creds)?;
                f()
            })
            .map_err(|err| {
                EngineError::new(
                    ErrorKind::Failed,
                    format!("cannot start a worker thread: {err}"),
                )
            })?;
        worker.join().unwrap_or_else(|_| {
            Err(EngineError::new(
                ErrorKind::Failed,
                "the worker thread acting as the caller crashed",
            ))
        })
    })
}

/// `run_as` when `creds` is given, else `f` on the calling thread (as
/// whoever the process is).
pub fn run_maybe_as<T, F>(creds: Option<&Credentials>, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send,
    T: Send,
{
    match creds {
        Some(creds) => run_as(creds, f),
        None => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    #[test]
    fn invalid_ids_are_refused_before_any_switch() {
        let creds = Credentials {
            uid: u32::MAX,
            gid: 1,
            groups: vec![],
        };
        let err = run_as(&creds, || Ok(())).unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
    }

    #[test]
    fn the_worker_and_its_threads_act_as_the_caller_and_the_caller_does_not() {
        if !is_root() {
            // Without CAP_SETUID the switch must fail, and be refused.
            let creds = Credentials {
                uid: 65534,
                gid: 65534,
                groups: vec![],
            };
            if rustix::process::geteuid().as_raw() != 65534 {
                assert!(run_as(&creds, || Ok(())).is_err());
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let creds = Credentials {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 100],
        };
        let (mine, child, read) = run_as(&creds, || {
            let child = std::thread::spawn(current).join().unwrap()?;
            Ok((
                current()?,
                child,
                std::fs::read(&secret).map_err(|e| e.kind()),
            ))
        })
        .unwrap();
        assert_eq!(mine.uid, 65534);
        assert_eq!(mine.groups, vec![100, 65534]);
        assert_eq!(child, mine, "a thread the worker starts inherits it");
        assert_eq!(read, Err(std::io::ErrorKind::PermissionDenied));
        // This thread and the process stay root.
        assert!(is_root());
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
        // A file the worker creates belongs to the caller.
        let made = dir.path().join("made");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        run_as(&creds, || {
            std::fs::write(&made, b"x").map_err(|e| EngineError::io("write", &made, &e))
        })
        .unwrap();
        let meta = std::fs::metadata(&made).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    }
}
