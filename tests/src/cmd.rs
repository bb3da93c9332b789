//! Running commands with a time limit and captured output.

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished command left behind.
#[derive(Clone)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code; None when killed by a signal (or by the time limit).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Panics with the whole output unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }
    /// Panics with the whole output if the command exited 0.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        assert!(
            !self.success() && !self.timed_out && self.code.is_some(),
            "command should have failed (with an exit code):\n{self}"
        );
        self
    }
    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        match (self.code, self.timed_out) {
            (_, true) => writeln!(f, "[timed out, killed]")?,
            (Some(c), _) => writeln!(f, "[exit code {c}]")?,
            (None, _) => writeln!(f, "[killed by a signal]")?,
        }
        writeln!(f, "--- stdout ---\n{}", self.stdout_str().trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr_str().trim_end())
    }
}

impl fmt::Debug for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The default time limit of a command in the tests.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `cmd` to the end (stdin is /dev/null), at most `timeout`.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    let mut cmdline: Vec<String> = Vec::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            cmdline.push(format!("{}={}", k.to_string_lossy(), shell_quote(v)));
        }
    }
    cmdline.push(shell_quote(cmd.get_program()));
    cmdline.extend(cmd.get_args().map(shell_quote));
    let cmdline = cmdline.join(" ");

    // Output goes to anonymous files, not pipes: no reader threads, no
    // deadlock on a full pipe, and grandchildren holding it do not block.
    let mut out = tempfile::tempfile().expect("tempfile");
    let mut err = tempfile::tempfile().expect("tempfile");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    use std::io::Seek;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    out.rewind().unwrap();
    out.read_to_end(&mut stdout).unwrap();
    err.rewind().unwrap();
    err.read_to_end(&mut stderr).unwrap();
    CmdOutput {
        cmdline,
        code: status.code(),
        stdout,
        stderr,
        timed_out,
    }
}

/// Runs `cmd` with the default time limit.
pub fn run(cmd: &mut Command) -> CmdOutput {
    run_timeout(cmd, DEFAULT_TIMEOUT)
}

/// Runs copyctl with COPYD_ADDRESS=`address`.
pub fn copyctl<S: AsRef<OsStr>>(address: &str, args: &[S]) -> CmdOutput {
    let mut c = Command::new(crate::bins::copyctl());
    c.env("COPYD_ADDRESS", address)
        .env("NO_COLOR", "1")
        .args(args);
    run(&mut c)
}
