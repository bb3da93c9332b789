//! A real systemd to test the installed package under: `systemd-nspawn -b`
//! on an overlay of this machine's own root.
//!
//! The test machines have no systemd as PID 1, but systemd-nspawn boots one
//! (with its own system dbus-daemon, logind and journald) in about 10 s.
//! The box's root is `mount -t overlay -o lowerdir=/`: the same packages as
//! the host, and every write (dpkg -i, users, files copied) goes to an
//! upper directory that is thrown away. Commands run inside with
//! `nsenter -t <the box's init> -a`.
//!
//! Teardown, also when a test panics: SIGKILL to the box's init (PID 1 of
//! its PID namespace, so the kernel kills everything in the box), wait for
//! systemd-nspawn, unmount the overlay, delete the directories. On a panic
//! the box's console log is printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::cmd::{run, run_timeout, CmdOutput};

/// A booted systemd in an overlay of `/`.
pub struct SystemdBox {
    nspawn: Child,
    init_pid: i32,
    merged: PathBuf,
    console: PathBuf,
    /// Holds upper/, work/, merged/ and the console log.
    dir: Option<tempfile::TempDir>,
}

/// Why this machine cannot boot a box, if it cannot.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    if Command::new("systemd-nspawn")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        return Some("systemd-nspawn missing (apt-get install systemd-container)".into());
    }
    None
}

static BOXES: AtomicUsize = AtomicUsize::new(0);

impl SystemdBox {
    /// Boots a box, or says why not and returns None. In CI (`CI` set) a
    /// machine that cannot is a failure: .ci/run installs what it needs.
    pub fn boot() -> Option<SystemdBox> {
        if let Some(why) = unavailable() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to boot a systemd box: {why}"
            );
            eprintln!("skipping: cannot boot a systemd box here: {why}");
            return None;
        }
        // Under /var/tmp, on the root file system: the overlay's upper and
        // work directories must be on one file system, and /var/tmp is not
        // the box's /tmp (which is a fresh tmpfs inside), so the box does
        // not see itself through its own /tmp.
        let dir = tempfile::Builder::new()
            .prefix("copyd-test-box-")
            .tempdir_in("/var/tmp")
            .expect("box directory");
        let (upper, work, merged) = (
            dir.path().join("upper"),
            dir.path().join("work"),
            dir.path().join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir(d).unwrap();
        }
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir=/,upperdir={},workdir={}",
                upper.display(),
                work.display()
            ))
            .arg(&merged))
        .assert_success();
        let console = dir.path().join("console.log");
        let log = std::fs::File::create(&console).unwrap();
        // A name of its own per box: nspawn keeps per-machine state under
        // /run/systemd/nspawn/propagate/<name>, and boxes boot in parallel.
        let name = format!(
            "copydbox{}n{}",
            std::process::id(),
            BOXES.fetch_add(1, Ordering::SeqCst)
        );
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--console=passive",
                // Its own network namespace: the host's services booting in
                // the box (a database, a web server) must not fight the
                // host's over ports. copyd needs no network.
                "--private-network",
            ])
            .arg(format!("--machine={name}"))
            .arg("-D")
            .arg(&merged)
            .args(["-b", "--", "systemd.firstboot=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start systemd-nspawn");
        let nspawn_pid = nspawn.id() as i32;
        let mut b = SystemdBox {
            nspawn,
            init_pid: 0,
            merged,
            console,
            dir: Some(dir),
        };
        b.init_pid = b.wait_for_init(nspawn_pid);
        // Booted far enough for copyd: the system bus and logind are up.
        // Not `is-system-running --wait`: the box boots every service of
        // the host, and one that cannot start here (it waits for its PID
        // file, say) would hold the boot for its whole start timeout.
        // (systemctl cannot connect at all until init has made its socket.)
        let out = b.wait_until(
            "systemctl is-active dbus.socket dbus.service systemd-logind.service",
            Duration::from_secs(120),
        );
        assert!(
            out.success(),
            "the box did not boot: {out}\n{}",
            b.sh("systemctl --failed --no-pager; systemctl list-jobs --no-pager")
        );
        // This machine's root carries Docker's /usr/sbin/policy-rc.d
        // ("exit 101": start no service from maintainer scripts), which
        // deb-systemd-invoke obeys. A distribution system has none; remove
        // it in the box (its writes are thrown away) so the maintainer
        // scripts act as they would there.
        b.sh("rm -f /usr/sbin/policy-rc.d").assert_success();
        Some(b)
    }

    /// The nspawn process's child is the box's init once it has exec'd
    /// systemd.
    fn wait_for_init(&mut self, nspawn_pid: i32) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children"))
                    .unwrap_or_default();
            for pid in children.split_whitespace() {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    return pid.parse().unwrap();
                }
            }
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn exited ({status}):\n{}",
                    std::fs::read_to_string(&self.console).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no systemd in the box after 60 s:\n{}",
                std::fs::read_to_string(&self.console).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The box's root, seen from the host (writes land in the overlay).
    pub fn root(&self) -> &Path {
        &self.merged
    }

    /// A host path for `inner`, a path inside the box.
    pub fn host_path(&self, inner: &str) -> PathBuf {
        self.merged.join(inner.trim_start_matches('/'))
    }

    /// Runs a shell script inside the box as root (all of init's
    /// namespaces), with the default time limit.
    pub fn sh(&self, script: &str) -> CmdOutput {
        self.sh_timeout(script, Duration::from_secs(120))
    }

    pub fn sh_timeout(&self, script: &str, timeout: Duration) -> CmdOutput {
        run_timeout(
            Command::new("nsenter")
                .arg("-t")
                .arg(self.init_pid.to_string())
                .args(["-a", "/bin/sh", "-c", script])
                // The host's environment means nothing in the box.
                .env_clear()
                .env(
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                )
                .env("LANG", "C.UTF-8")
                .env("NO_COLOR", "1")
                .env("SYSTEMD_PAGER", ""),
            timeout,
        )
    }

    /// Runs a script in the box as `user` (a login-like environment:
    /// HOME, USER, the user's groups), through runuser.
    pub fn sh_as(&self, user: &str, script: &str) -> CmdOutput {
        self.sh(&format!(
            "runuser -l {user} -c {}",
            shell_single_quote(script)
        ))
    }

    /// Puts a host file into the box at `inner` (a path inside it).
    pub fn put(&self, host_file: &Path, inner: &str) {
        let to = self.host_path(inner);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(host_file, &to)
            .unwrap_or_else(|e| panic!("copy {} into the box: {e}", host_file.display()));
    }

    /// Adds a normal user with a home directory.
    pub fn add_user(&self, user: &str) {
        self.sh(&format!("useradd -m -s /bin/sh {user}"))
            .assert_success();
    }

    /// Waits until `script` exits 0 in the box, at most `timeout`; returns
    /// its last output either way.
    pub fn wait_until(&self, script: &str, timeout: Duration) -> CmdOutput {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.sh(script);
            if out.success() || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The box's journal, for failure messages.
    pub fn journal(&self) -> String {
        self.sh("journalctl -b --no-pager -o short-monotonic | tail -n 200")
            .stdout_str()
    }
}

/// `'...'` for /bin/sh.
pub fn shell_single_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Drop for SystemdBox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- the box's journal (last 200 lines) ---\n{}",
                self.journal()
            );
            eprintln!(
                "--- the box's console ---\n{}",
                std::fs::read_to_string(&self.console).unwrap_or_default()
            );
        }
        // PID 1 of the box's PID namespace: when it dies the kernel kills
        // every process in the box, and systemd-nspawn then exits.
        if self.init_pid > 0 {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(self.init_pid).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.nspawn.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.nspawn.kill();
                    let _ = self.nspawn.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        // Lazily: a straggling process of the host (a test's own command
        // whose cwd was in the box) must not keep the overlay, and the
        // directories below it, from going away.
        let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
        if let Some(dir) = self.dir.take() {
            // The upper directory holds root-owned files of every kind;
            // remove_dir_all copes, and a leftover is named copyd-test-box-*.
            let _ = dir.close();
        }
    }
}
