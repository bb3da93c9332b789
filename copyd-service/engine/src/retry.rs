//! Retrying transient errors: the same call again after a wait that
//! doubles, a few times, each retry counted on the job and logged. Errors
//! that another try cannot mend (EACCES, ENOENT, ENOSPC, EIO of a local
//! disk, ...) fail at once.

use std::fs::File;
use std::io;
use std::time::Duration;

use rustix::io::Errno;

use crate::engines::CopyContext;
use crate::error::Result;

/// How often, and after how long, a transient error is tried again
/// (`[engine] retry_attempts` and `retry_backoff` of the daemon's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first; 0 turns retries off.
    pub attempts: u32,
    /// The wait before the first retry; each next one waits twice as long.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (1 for the first).
    pub fn wait_before(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
    }
}

/// The statfs magic numbers of network file systems, on which EIO may be a
/// server or link that comes back: NFS, SMB (cifs, smb2), 9p, Ceph, AFS.
const NETWORK_FILE_SYSTEMS: [i64; 7] = [
    0x6969,      // NFS
    0xFF53_4D42, // CIFS
    0xFE53_4D42, // SMB2
    0x0102_1997, // 9P
    0x00C3_6400, // Ceph
    0x5346_414F, // AFS
    0x6B41_4653, // kAFS
];

/// Whether `err`, from a call on `file` (when there is one), may go away
/// if the call is made again: an interrupted or would-block call, a busy
/// resource, a timeout, a stale NFS handle, memory io_uring could not get
/// at that moment, and EIO on a network file system.
pub fn is_transient(err: &io::Error, file: Option<&File>) -> bool {
    let Some(errno) = err.raw_os_error().map(Errno::from_raw_os_error) else {
        return err.kind() == io::ErrorKind::Interrupted;
    };
    match errno {
        Errno::INTR | Errno::AGAIN | Errno::BUSY | Errno::TIMEDOUT | Errno::STALE => true,
        Errno::NOMEM => true,
        Errno::IO => file.is_some_and(is_on_network_file_system),
        _ => false,
    }
}

fn is_on_network_file_system(file: &File) -> bool {
    rustix::fs::fstatfs(file).is_ok_and(|fs| NETWORK_FILE_SYSTEMS.contains(&{ fs.f_type }))
}

impl CopyContext<'_> {
    /// Makes `call` (on `file`, for `what` in the log) and, while it fails
    /// with a transient error and the policy allows, waits and makes it
    /// again. Each retry is counted on the job and logged; a cancel stops
    /// the wait. The last error is returned as it came.
    pub fn retrying<T>(
        &self,
        what: &str,
        file: Option<&File>,
        mut call: impl FnMut() -> io::Result<T>,
    ) -> Result<io::Result<T>> {
        let policy = self.control.retry_policy();
        let mut attempt = 0;
        loop {
            match call() {
                Err(err) if attempt < policy.attempts && is_transient(&err, file) => {
                    attempt += 1;
                    self.wait_to_retry(what, &err, attempt, policy)?;
                }
                result => return Ok(result),
            }
        }
    }

    /// Counts and logs retry number `attempt` after `err`, and waits for it.
    pub fn wait_to_retry(
        &self,
        what: &str,
        err: &io::Error,
        attempt: u32,
        policy: RetryPolicy,
    ) -> Result<()> {
        let wait = policy.wait_before(attempt);
        self.progress.add_retry();
        tracing::warn!(
            file = %self.source.display(),
            error = %err,
            attempt,
            of = policy.attempts,
            wait_ms = wait.as_millis() as u64,
            "transient error: trying to {what} again"
        );
        self.control.sleep(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_and_permanent_errors_are_told_apart() {
        let file = tempfile::tempfile().unwrap();
        for errno in [
            Errno::INTR,
            Errno::AGAIN,
            Errno::BUSY,
            Errno::TIMEDOUT,
            Errno::STALE,
        ] {
            assert!(is_transient(&errno.into(), Some(&file)), "{errno:?}");
        }
        // EIO of a local disk (this temporary file's) is not retried.
        for errno in [
            Errno::ACCESS,
            Errno::PERM,
            Errno::NOENT,
            Errno::NOSPC,
            Errno::ROFS,
            Errno::DQUOT,
            Errno::IO,
        ] {
            assert!(!is_transient(&errno.into(), Some(&file)), "{errno:?}");
        }
    }

    #[test]
    fn the_wait_doubles() {
        let policy = RetryPolicy::default();
        let waits: Vec<u128> = (1..=3).map(|a| policy.wait_before(a).as_millis()).collect();
        assert_eq!(waits, [200, 400, 800]);
    }
}
