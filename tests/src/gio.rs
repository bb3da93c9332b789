//! The GLib/Gio client tests/clients/watch_job.py, run as a child process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The Python with python3-gi: Debian's /usr/bin/python3 (the python3 first
/// on PATH may be another one without gi). PYTHON_GI overrides.
pub fn python_gi() -> String {
    std::env::var("PYTHON_GI").unwrap_or_else(|_| "/usr/bin/python3".to_string())
}

/// A running watch_job.py.
pub struct WatchJob {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stderr_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    job: Option<String>,
    cmdline: String,
}

/// What watch_job.py printed at the end.
#[derive(Debug)]
pub struct WatchResult {
    pub json: serde_json::Value,
    pub code: Option<i32>,
    pub stderr: String,
}

impl WatchJob {
    /// Starts `watch_job.py --address ADDR ARGS...`.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(address: &str, args: &[S]) -> WatchJob {
        let script = crate::repo_root().join("tests/clients/watch_job.py");
        let dir = crate::scratch_dir("gio");
        let stderr_path = dir.path().join("stderr");
        let mut cmd = Command::new(python_gi());
        cmd.arg(&script).arg("--address").arg(address).args(args);
        let cmdline = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e} (needs python3-gi)", python_gi()));
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        WatchJob {
            child: Some(child),
            lines: rx,
            stderr_path,
            _dir: dir,
            job: None,
            cmdline,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The job path, once the script has it (waits up to `limit`).
    #[track_caller]
    pub fn job(&mut self, limit: Duration) -> String {
        if let Some(j) = &self.job {
            return j.clone();
        }
        let line = self.lines.recv_timeout(limit).unwrap_or_else(|_| {
            panic!(
                "{}: no job path within {limit:?}; stderr:\n{}",
                self.cmdline,
                self.stderr()
            )
        });
        let j = line
            .strip_prefix("JOB ")
            .unwrap_or_else(|| {
                panic!(
                    "{}: expected 'JOB <path>', got {line:?}; stderr:\n{}",
                    self.cmdline,
                    self.stderr()
                )
            })
            .to_string();
        self.job = Some(j.clone());
        j
    }

    /// Waits for the script to end (at most `limit`) and parses its JSON.
    #[track_caller]
    pub fn wait(mut self, limit: Duration) -> WatchResult {
        let start = Instant::now();
        let mut child = self.child.take().unwrap();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{}: still running after {limit:?}; stderr:\n{}",
                    self.cmdline,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut last_json = None;
        let mut all = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            if l.starts_with('{') {
                last_json = Some(l.clone());
            }
            all.push(l);
        }
        let stderr = self.stderr();
        let text = last_json.unwrap_or_else(|| {
            panic!(
                "{}: no JSON summary ({status}); stdout:\n{}\nstderr:\n{stderr}",
                self.cmdline,
                all.join("\n")
            )
        });
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("bad JSON from watch_job.py ({e}): {text}"));
        WatchResult {
            json,
            code: status.code(),
            stderr,
        }
    }
}

impl Drop for WatchJob {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
