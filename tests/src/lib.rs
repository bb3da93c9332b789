//! End-to-end test harness for copyd.
//!
//! Every test builds its own world: a private system-type `dbus-daemon`
//! ([`TestBus`]), a `copyd` on it ([`Daemon`]) with a state directory and a
//! config file in a temporary directory, and temporary source and
//! destination trees. Nothing is shared between tests, so they run in
//! parallel, and everything is torn down on drop, also when a test panics
//! (then the logs of copyd and the bus are printed).
//!
//! The binaries under test are the ones cargo built next to the test
//! executable (`target/<profile>/copyd`, `target/<profile>/copyctl`); see
//! [`bins`].

pub mod bins;
pub mod bus;
pub mod busctl;
pub mod cases;
pub mod cmd;
pub mod contract;
pub mod daemon;
pub mod faultfs;
pub mod gio;
pub mod mounts;
pub mod polkit;
pub mod systemd_box;
pub mod tree;

use std::path::{Path, PathBuf};

pub use bus::{Policy, TestBus};
pub use cmd::CmdOutput;
pub use daemon::Daemon;

/// Well-known name, paths and interfaces of the contract.
pub const BUS_NAME: &str = "org.example.Copyd1";
pub const MANAGER_PATH: &str = "/org/example/Copyd1";
pub const MANAGER_IFACE: &str = "org.example.Copyd1.Manager";
pub const JOB_IFACE: &str = "org.example.Copyd1.Job";
pub const JOBS_PATH_PREFIX: &str = "/org/example/Copyd1/jobs/";
pub const ERROR_PREFIX: &str = "org.example.Copyd1.Error.";

/// The root of the repository (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The contract: dbus/org.example.Copyd1.xml.
pub fn contract_xml_path() -> PathBuf {
    repo_root().join("dbus/org.example.Copyd1.xml")
}

/// A whole test world: a scratch directory, a bus and copyd on it.
/// Fields drop in order: copyd first, then the bus, then the directory.
pub struct TestEnv {
    pub daemon: Daemon,
    pub bus: TestBus,
    /// Scratch space for sources and destinations of this test.
    pub work: tempfile::TempDir,
}

impl TestEnv {
    /// A permissive bus with copyd on it.
    pub fn start() -> TestEnv {
        Self::start_with(Policy::Permissive)
    }

    pub fn start_with(policy: Policy) -> TestEnv {
        let bus = TestBus::start(policy);
        let daemon = Daemon::start(&bus);
        let work = scratch_dir("work");
        TestEnv { daemon, bus, work }
    }

    pub fn address(&self) -> &str {
        self.bus.address()
    }

    /// A path inside this test's scratch directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.work.path().join(rel)
    }

    /// Runs copyctl with COPYD_ADDRESS set to this bus.
    pub fn copyctl<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> CmdOutput {
        cmd::copyctl(self.address(), args)
    }

    /// busctl helpers bound to this bus.
    pub fn busctl(&self) -> busctl::Busctl<'_> {
        busctl::Busctl::new(self.address())
    }
}

/// A temporary directory under $TMPDIR (normally /tmp), named after what it
/// is for, so leftovers are recognisable.
pub fn scratch_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("copyd-test-{what}-"))
        .tempdir()
        .expect("create temporary directory")
}

/// A `Vec<OsString>` from anything that is `AsRef<OsStr>` (str, Path,
/// PathBuf, OsStr...): `osargs!["copy", "-r", src, dst]`.
#[macro_export]
macro_rules! osargs {
    ($($x:expr),* $(,)?) => {
        [$(::std::ffi::OsString::from(::std::convert::AsRef::<::std::ffi::OsStr>::as_ref(&$x))),*]
    };
}
