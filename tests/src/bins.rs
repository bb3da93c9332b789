//! Where the binaries under test are.
//!
//! A test executable lives in `target/<profile>/deps/`; `cargo test
//! --workspace` (or `cargo build --workspace`) puts `copyd` and `copyctl`
//! in `target/<profile>/`, and building this package's tests puts its own
//! `faultfs` there. COPYD_BIN, COPYCTL_BIN and FAULTFS_BIN override the
//! lookup (to test installed binaries, for instance).

use std::path::PathBuf;

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn find(name: &str, env_override: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_override) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{env_override}={} does not exist", p.display());
        return p;
    }
    let p = profile_dir().join(name);
    if !p.is_file() {
        panic!(
            "{} not found: run cargo build --workspace first (or set {env_override})",
            p.display()
        );
    }
    p
}

/// The copyd daemon binary.
pub fn copyd() -> PathBuf {
    find("copyd", "COPYD_BIN")
}

/// The copyctl client binary.
pub fn copyctl() -> PathBuf {
    find("copyctl", "COPYCTL_BIN")
}

/// The fault-injecting FUSE file system (src/bin/faultfs.rs).
pub fn faultfs() -> PathBuf {
    find("faultfs", "FAULTFS_BIN")
}
