//! copyd, started on a test bus.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bus::TestBus;

/// A running copyd with its own state directory and config file.
/// Drop sends SIGTERM, then SIGKILL after 3 s.
pub struct Daemon {
    child: Option<Child>,
    address: String,
    dir: tempfile::TempDir,
    log: PathBuf,
}

/// The config file the tests give copyd.
pub fn config_toml(state_dir: &Path) -> String {
    format!(
        "# written by copyd-tests\n\
         max_concurrent_jobs = 4\n\
         job_retention_seconds = 600\n\
         state_dir = \"{}\"\n\
         rate_limit = 0\n",
        state_dir
            .display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    )
}

impl Daemon {
    pub fn start(bus: &TestBus) -> Daemon {
        Self::start_with_config(bus, None)
    }

    /// Starts copyd; `config` replaces the default config text.
    pub fn start_with_config(bus: &TestBus, config: Option<&str>) -> Daemon {
        let dir = crate::scratch_dir("copyd");
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        let conf = dir.path().join("copyd.toml");
        fs::write(
            &conf,
            config
                .map(str::to_string)
                .unwrap_or_else(|| config_toml(&state)),
        )
        .unwrap();
        Self::start_in(bus, dir)
    }

    /// Kills copyd with SIGKILL (no chance to clean up, as in a crash) and
    /// hands back its directory (state, config, logs) for a restart.
    pub fn kill9(mut self) -> tempfile::TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let empty = crate::scratch_dir("copyd-killed");
        std::mem::replace(&mut self.dir, empty)
    }

    /// Kills copyd with SIGKILL and starts it again in place, on the same
    /// bus, state directory and config.
    pub fn crash_and_restart(&mut self, bus: &TestBus) {
        self.crash_and_restart_after(bus, || {});
    }

    /// Like [`Self::crash_and_restart`], running `while_down` between the
    /// kill and the new start: what others do while copyd is not running.
    pub fn crash_and_restart_after(&mut self, bus: &TestBus, while_down: impl FnOnce()) {
        let crashed = std::mem::replace(self, Daemon::placeholder(bus));
        let dir = crashed.kill9();
        while_down();
        *self = Daemon::start_in(bus, dir);
    }

    /// Stops copyd with SIGTERM, as `systemctl restart` does (it interrupts
    /// its jobs and checkpoints them), and starts it again in place, on the
    /// same bus, state directory and config.
    pub fn restart(&mut self, bus: &TestBus) {
        let mut stopped = std::mem::replace(self, Daemon::placeholder(bus));
        let status = stopped.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "copyd did not stop cleanly on SIGTERM ({status:?}); its log:\n{}",
            stopped.log_text()
        );
        let dir = std::mem::replace(&mut stopped.dir, crate::scratch_dir("copyd-stopped"));
        *self = Daemon::start_in(bus, dir);
    }

    /// A Daemon with no process, to stand in while the real one restarts.
    fn placeholder(bus: &TestBus) -> Daemon {
        let dir = crate::scratch_dir("copyd-placeholder");
        let log = dir.path().join("copyd.log");
        Daemon {
            child: None,
            address: bus.address().to_string(),
            dir,
            log,
        }
    }

    /// Starts copyd again on the directory of an earlier one (see kill9):
    /// same state directory and config, the log appended to.
    pub fn start_in(bus: &TestBus, dir: tempfile::TempDir) -> Daemon {
        let state = dir.path().join("state");
        let conf = dir.path().join("copyd.toml");
        let log = dir.path().join("copyd.log");
        // The test's own state directory, unless its config names one.
        let config_names_state = fs::read_to_string(&conf)
            .is_ok_and(|c| c.contains("state_dir") || c.contains("checkpoint_dir"));
        let mut command = Command::new(crate::bins::copyd());
        if !config_names_state {
            command.arg("--state-dir").arg(&state);
        }
        let child = command
            .arg("--address")
            .arg(bus.address())
            .arg("--config")
            .arg(&conf)
            .env("RUST_LOG", "debug")
            // The log stays in the file below, also where a journal runs.
            .env("COPYD_LOG", "stderr")
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.path().join("copyd.stdout")).unwrap())
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .expect("cannot start copyd");
        let mut d = Daemon {
            child: Some(child),
            address: bus.address().to_string(),
            dir,
            log,
        };
        d.wait_for_name(Duration::from_secs(10));
        d
    }

    fn wait_for_name(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "copyd exited ({st}) before taking {} on the bus; its log:\n{}",
                    crate::BUS_NAME,
                    self.log_text()
                );
            }
            if name_has_owner(&self.address, crate::BUS_NAME) {
                return;
            }
            if start.elapsed() > limit {
                panic!(
                    "copyd did not take {} within {limit:?}; its log:\n{}",
                    crate::BUS_NAME,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether copyd is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM, wait up to 3 s, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if start.elapsed() > Duration::from_secs(3) {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "===== copyd log (RUST_LOG=debug) =====\n{}",
                self.log_text()
            );
        }
    }
}

/// Asks the bus whether `name` has an owner (dbus-send NameHasOwner).
pub fn name_has_owner(address: &str, name: &str) -> bool {
    let out = crate::cmd::run_timeout(
        Command::new("dbus-send")
            .arg(format!("--bus={address}"))
            .arg("--print-reply")
            .arg("--dest=org.freedesktop.DBus")
            .arg("/org/freedesktop/DBus")
            .arg("org.freedesktop.DBus.NameHasOwner")
            .arg(format!("string:{name}")),
        Duration::from_secs(5),
    );
    out.success() && out.stdout_str().contains("boolean true")
}
