//! File systems a test mounts for itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd::run;

/// A small tmpfs (64 MiB, mode 1777: sticky and world-writable, as /tmp
/// is), mounted for a test and lazily unmounted when dropped. Needs root.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        run(Command::new("mount").args([
            "-t",
            "tmpfs",
            "-o",
            "size=64m,mode=1777",
            "tmpfs",
            at.to_str().unwrap(),
        ]))
        .assert_success();
        Tmpfs(at.to_path_buf())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
