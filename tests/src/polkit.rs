//! A test world for copyd's security: copyd as root on a private system-type
//! bus, a real polkitd on that same bus, and clients that are real non-root
//! users (run through `setpriv`).
//!
//! - polkitd reads actions from /usr/share/polkit-1/actions and rules from
//!   /etc/polkit-1/rules.d; [`SecureEnv::start`] installs
//!   polkit/org.example.copyd1.policy and the test-only rules
//!   polkit/tests/49-copyd-test.rules there if they are absent, and removes
//!   what it installed when the last SecureEnv of the test process ends.
//! - The users copyd-test-user, copyd-test-other and copyd-test-admin are
//!   created (useradd --system, no home) if missing, and left in place.
//! - polkit sees no login sessions here, so `allow_any` applies: `copy` is
//!   yes for everyone; the other actions are auth_admin (a challenge,
//!   NotAuthorizedCanObtain) except what the test rules give
//!   copyd-test-admin (copy-privileged and manage-other-jobs).
//!
//! Everything needs root; [`SecureEnv::start`] returns None (and the tests
//! skip, saying why) when it is not root or polkitd is missing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cmd::{run, run_timeout, CmdOutput};
use crate::{Daemon, Policy, TestBus};

pub const USER: &str = "copyd-test-user";
pub const OTHER: &str = "copyd-test-other";
pub const ADMIN: &str = "copyd-test-admin";

pub const POLKIT_NAME: &str = "org.freedesktop.PolicyKit1";

const POLKITD_PATHS: &[&str] = &[
    "/usr/lib/polkit-1/polkitd",
    "/usr/libexec/polkitd",
    "/usr/libexec/polkit-1/polkitd",
];

fn polkitd_binary() -> Option<PathBuf> {
    POLKITD_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Why the security tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (copyd as root, clients as other users)".into());
    }
    if polkitd_binary().is_none() {
        return Some(format!("polkitd not found in {POLKITD_PATHS:?}"));
    }
    for tool in ["setpriv", "useradd", "busctl"] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} not found"));
        }
    }
    None
}

/// A user's uid and primary gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
}

fn id_of(name: &str, flag: &str) -> Option<u32> {
    let out = run(Command::new("id").args([flag, name]));
    out.success()
        .then(|| out.stdout_str().trim().parse().ok())
        .flatten()
}

static USERADD: Mutex<()> = Mutex::new(());

/// Creates the user `name` if missing; its ids.
pub fn ensure_user(name: &str) -> Ids {
    let _serial = USERADD.lock().unwrap_or_else(|p| p.into_inner());
    if id_of(name, "-u").is_none() {
        run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ]))
        .assert_success();
    }
    Ids {
        uid: id_of(name, "-u").expect("uid"),
        gid: id_of(name, "-g").expect("gid"),
    }
}

/// Files installed for polkitd, and how many SecureEnvs use them.
struct Installed {
    users: usize,
    ours: Vec<PathBuf>,
}

static INSTALLED: Mutex<Installed> = Mutex::new(Installed {
    users: 0,
    ours: Vec::new(),
});

/// Keeps polkit's files installed while it lives.
pub struct PolkitFiles(());

impl PolkitFiles {
    pub fn install() -> PolkitFiles {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        let root = crate::repo_root();
        for (from, to) in [
            (
                root.join("polkit/org.example.copyd1.policy"),
                PathBuf::from("/usr/share/polkit-1/actions/org.example.copyd1.policy"),
            ),
            (
                root.join("polkit/tests/49-copyd-test.rules"),
                PathBuf::from("/etc/polkit-1/rules.d/49-copyd-test.rules"),
            ),
        ] {
            if to.exists() {
                continue;
            }
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            // Write beside it, then rename: a polkitd starting meanwhile
            // never reads half a file.
            let tmp = to.with_extension("copyd-test-tmp");
            fs::copy(&from, &tmp).unwrap_or_else(|e| panic!("install {}: {e}", from.display()));
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
            fs::rename(&tmp, &to).unwrap();
            installed.ours.push(to);
        }
        installed.users += 1;
        PolkitFiles(())
    }
}

impl Drop for PolkitFiles {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        installed.users -= 1;
        if installed.users == 0 {
            for file in installed.ours.drain(..) {
                let _ = fs::remove_file(file);
            }
        }
    }
}

/// A polkitd serving on a test bus; killed on drop.
pub struct Polkitd {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Polkitd {
    pub fn start(bus: &TestBus) -> Polkitd {
        let dir = crate::scratch_dir("polkitd");
        let log = dir.path().join("polkitd.log");
        let child = Command::new(polkitd_binary().expect("polkitd"))
            .arg("--no-debug")
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(dir.path().join("polkitd.stderr")).unwrap())
            .spawn()
            .expect("cannot start polkitd");
        let mut p = Polkitd {
            child: Some(child),
            log,
            _dir: dir,
        };
        let start = Instant::now();
        while !crate::daemon::name_has_owner(bus.address(), POLKIT_NAME) {
            if let Some(status) = p.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("polkitd exited ({status}): {}", p.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "polkitd did not take {POLKIT_NAME}: {}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    pub fn log_text(&self) -> String {
        let mut text = fs::read_to_string(&self.log).unwrap_or_default();
        text.push_str(
            &fs::read_to_string(self.log.with_file_name("polkitd.stderr")).unwrap_or_default(),
        );
        text
    }
}

impl Drop for Polkitd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("===== polkitd log =====\n{}", self.log_text());
        }
    }
}

/// copyd (root) + polkitd on a private system bus, users to call as.
/// Fields drop in order: copyd, polkitd, the bus, then the files.
pub struct SecureEnv {
    pub daemon: Daemon,
    pub polkitd: Polkitd,
    pub bus: TestBus,
    /// Scratch space, mode 0755 so the test users can reach their own
    /// directories in it.
    pub work: tempfile::TempDir,
    /// Where copyd appends its audit events (config audit_log).
    pub audit_log: PathBuf,
    _audit_dir: tempfile::TempDir,
    _files: PolkitFiles,
}

fn make_reachable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

impl SecureEnv {
    /// None (with a message on stderr) when the tests cannot run here.
    pub fn start() -> Option<SecureEnv> {
        Self::start_with("")
    }

    /// `extra_config` is appended to copyd's config file.
    pub fn start_with(extra_config: &str) -> Option<SecureEnv> {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return None;
        }
        for user in [USER, OTHER, ADMIN] {
            ensure_user(user);
        }
        let files = PolkitFiles::install();
        let bus = TestBus::start(Policy::Permissive);
        make_reachable(bus.dir());
        let socket = bus.dir().join("bus");
        if socket.exists() {
            fs::set_permissions(&socket, fs::Permissions::from_mode(0o777)).unwrap();
        }
        let polkitd = Polkitd::start(&bus);
        let audit_dir = crate::scratch_dir("audit");
        let audit_log = audit_dir.path().join("audit.log");
        let config = format!(
            "max_concurrent_jobs = 4\njob_retention_seconds = 600\nrate_limit = 0\naudit_log = \"{}\"\n{extra_config}\n",
            audit_log.display()
        );
        let daemon = Daemon::start_with_config(&bus, Some(&config));
        let work = crate::scratch_dir("secure");
        make_reachable(work.path());
        Some(SecureEnv {
            daemon,
            polkitd,
            bus,
            work,
            audit_log,
            _audit_dir: audit_dir,
            _files: files,
        })
    }

    pub fn address(&self) -> &str {
        self.bus.address()
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.work.path().join(rel)
    }

    /// A directory `name` in the scratch space that belongs to `user`
    /// (mode 0700).
    pub fn user_dir(&self, user: &str, name: &str) -> PathBuf {
        let ids = ensure_user(user);
        let dir = self.path(name);
        fs::create_dir_all(&dir).unwrap();
        chown(&dir, ids);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    /// `program args...` as `user` (setpriv --init-groups), with
    /// COPYD_ADDRESS and DBUS_SYSTEM_BUS_ADDRESS set to the test bus.
    pub fn command_as(&self, user: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let ids = ensure_user(user);
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", ids.uid))
            .arg(format!("--regid={}", ids.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .env("COPYD_ADDRESS", self.address())
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.address())
            .env("NO_COLOR", "1")
            .current_dir("/");
        c
    }

    /// busctl as `user`: `busctl --address=BUS ARGS...`.
    pub fn busctl_as<S: AsRef<std::ffi::OsStr>>(&self, user: &str, args: &[S]) -> CmdOutput {
        let mut c = self.command_as(user, "busctl");
        c.arg(format!("--address={}", self.address())).args(args);
        run_timeout(&mut c, Duration::from_secs(60))
    }

    /// `busctl call` on copyd as `user`.
    pub fn call_as(
        &self,
        user: &str,
        path: &str,
        iface: &str,
        method: &str,
        sig: &str,
        args: &[String],
    ) -> CmdOutput {
        let mut all: Vec<String> = vec![
            "call".into(),
            crate::BUS_NAME.into(),
            path.into(),
            iface.into(),
            method.into(),
        ];
        if !sig.is_empty() {
            all.push(sig.into());
            all.extend(args.iter().cloned());
        }
        self.busctl_as(user, &all)
    }

    /// Manager.Copy/Move as `user` with busctl option triples.
    pub fn start_as(
        &self,
        user: &str,
        method: &str,
        sources: &[&Path],
        dest: &Path,
        opts: &[&str],
    ) -> CmdOutput {
        use crate::busctl::{aay_args, ay_args, dict_args, path_bytes};
        let srcs: Vec<&[u8]> = sources.iter().map(|p| path_bytes(p)).collect();
        let mut args = aay_args(&srcs);
        args.extend(ay_args(path_bytes(dest)));
        args.extend(dict_args(opts));
        self.call_as(
            user,
            crate::MANAGER_PATH,
            crate::MANAGER_IFACE,
            method,
            "aayaya{sv}",
            &args,
        )
    }

    /// `gdbus call` on copyd as `user` (GVariant text arguments); gdbus
    /// shows D-Bus error names (see busctl::gdbus_error_name).
    pub fn gdbus_as(&self, user: &str, path: &str, method: &str, args: &[String]) -> CmdOutput {
        let mut c = self.command_as(user, "gdbus");
        c.args([
            "call",
            "--address",
            self.address(),
            "--dest",
            crate::BUS_NAME,
            "--object-path",
            path,
            "--method",
            method,
        ])
        .args(args);
        run_timeout(&mut c, Duration::from_secs(60))
    }

    /// Manager.Copy/Move as `user` through gdbus; `options` is GVariant
    /// text of the a{sv} (e.g. `{'recursive': <true>}`).
    pub fn gdbus_start_as(
        &self,
        user: &str,
        method: &str,
        sources: &[&Path],
        dest: &Path,
        options: &str,
    ) -> CmdOutput {
        use crate::busctl::{gvariant_ay, path_bytes};
        let srcs: Vec<String> = sources.iter().map(|p| gvariant_ay(path_bytes(p))).collect();
        let args = vec![
            format!("[{}]", srcs.join(", ")),
            gvariant_ay(path_bytes(dest)),
            format!("@a{{sv}} {options}"),
        ];
        self.gdbus_as(
            user,
            crate::MANAGER_PATH,
            &format!("{}.{method}", crate::MANAGER_IFACE),
            &args,
        )
    }

    /// copyctl as `user`.
    pub fn copyctl_as<S: AsRef<std::ffi::OsStr>>(&self, user: &str, args: &[S]) -> CmdOutput {
        let mut c = self.command_as(user, crate::bins::copyctl());
        c.args(args);
        run_timeout(&mut c, Duration::from_secs(120))
    }

    /// The audit events so far (JSON lines of audit_log).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// chown `path` to `ids`.
pub fn chown(path: &Path, ids: Ids) {
    rustix::fs::chown(
        path,
        Some(rustix::fs::Uid::from_raw(ids.uid)),
        Some(rustix::fs::Gid::from_raw(ids.gid)),
    )
    .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}
