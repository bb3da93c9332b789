//! Helpers shared by the engine's integration tests: scratch file systems,
//! test data, and running a copy through the public API.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use copyd_engine::{
    resolve, run, Control, CopyIdentity, EngineError, EngineSet, FileIdentity, Journal, Operation,
    Options, Outcome, Preserve, Progress, Request,
};

/// A scratch file system on a loop device (or a size-limited tmpfs), gone
/// again when dropped, even when the test panics.
pub struct ScratchMount {
    pub path: PathBuf,
    image: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl ScratchMount {
    /// `kind` is "btrfs" or "xfs"; None (with the reason printed) when this
    /// machine cannot make or mount one.
    pub fn loop_fs(kind: &str, mib: u64) -> Option<ScratchMount> {
        let dir = tempfile::tempdir_in("/tmp").ok()?;
        let image = PathBuf::from(format!(
            "/tmp/copyd-test-{}-{}-{}.img",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            kind
        ));
        let made = File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .is_ok()
            && quiet(Command::new(format!("mkfs.{kind}")).arg("-q").arg(&image));
        if !made {
            eprintln!("SKIP: cannot make a {kind} image (mkfs.{kind} missing?)");
            let _ = fs::remove_file(&image);
            return None;
        }
        let mount = ScratchMount {
            path: dir.path().to_path_buf(),
            image: Some(image.clone()),
            _dir: dir,
        };
        if !quiet(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mount.path),
        ) {
            eprintln!("SKIP: cannot loop-mount a {kind} image (not root, or no loop devices)");
            return None; // Drop removes the image; the unmount fails harmlessly.
        }
        Some(mount)
    }

    /// A tmpfs of `kib` KiB, for running out of space on purpose.
    pub fn small_tmpfs(kib: u64) -> Option<ScratchMount> {
        let dir = tempfile::tempdir_in("/tmp").ok()?;
        let mount = ScratchMount {
            path: dir.path().to_path_buf(),
            image: None,
            _dir: dir,
        };
        let size = format!("size={kib}k");
        if !quiet(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &size, "copyd-test"])
                .arg(&mount.path),
        ) {
            eprintln!("SKIP: cannot mount a tmpfs (not root?)");
            return None;
        }
        Some(mount)
    }
}

impl Drop for ScratchMount {
    fn drop(&mut self) {
        if !quiet(Command::new("umount").arg(&self.path)) {
            // Busy (a file still open in a panicking test): detach lazily.
            quiet(Command::new("umount").arg("-l").arg(&self.path));
        }
        if let Some(image) = &self.image {
            let _ = fs::remove_file(image);
        }
    }
}

fn quiet(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `program args` and returns its stdout; panics on failure.
pub fn output(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Pseudo-random bytes: nothing can compress, dedupe or skip them.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// Writes `len` pattern bytes to `path` and syncs them (so they have
/// extents on disk for filefrag to show).
pub fn write_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let data = pattern(len, seed);
    let mut file = File::create(path).unwrap();
    file.write_all(&data).unwrap();
    file.sync_all().unwrap();
    data
}

/// Sources whose names are hard links of each other, across items and
/// into a tree: `a`, `b` and `tree/c` one file of 70,000 bytes, `tree/d`
/// and `e` one of 500.
pub fn hard_linked_sources(src: &Path) {
    std::fs::create_dir_all(src.join("tree")).unwrap();
    write_file(&src.join("a"), 70_000, 1);
    std::fs::hard_link(src.join("a"), src.join("b")).unwrap();
    std::fs::hard_link(src.join("a"), src.join("tree/c")).unwrap();
    write_file(&src.join("tree/d"), 500, 2);
    std::fs::hard_link(src.join("tree/d"), src.join("e")).unwrap();
}

/// Drops `file`'s clean pages from the page cache (POSIX_FADV_DONTNEED,
/// which anyone who may read a file may do) until `pieces` of it look
/// uncached to copyd's probe; false if they never do (tmpfs keeps its
/// pages: it has no device to read them back from). Retried because right
/// after a sync ext4 may hold a page's buffers a moment longer, and
/// DONTNEED skips such pages.
pub fn drop_until_uncached(file: &File, pieces: &[std::ops::Range<u64>]) -> bool {
    (0..50).any(|_| {
        rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let gone = copyd_engine::residency::mostly_uncached(file, pieces);
        if !gone {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        gone
    })
}

/// Whether `file` is on a tmpfs.
pub fn on_tmpfs(file: &File) -> bool {
    rustix::fs::fstatfs(file).unwrap().f_type as u64 == 0x0102_1994
}

/// What a finished copy reports.
pub struct Copied {
    pub outcome: Outcome,
    pub engine_bytes: BTreeMap<&'static str, u64>,
    pub progress: Progress,
}

/// Copies `source` to `destination` through resolve() and run(), as the
/// daemon does.
pub fn copy(
    source: &Path,
    destination: &Path,
    engine: &str,
    preserve: Preserve,
) -> Result<Copied, EngineError> {
    let options = Options {
        recursive: true,
        engine: engine.into(),
        preserve,
        ..Options::default()
    };
    copy_with(source, destination, options, &EngineSet::probe())
}

pub fn copy_with(
    source: &Path,
    destination: &Path,
    options: Options,
    engines: &EngineSet,
) -> Result<Copied, EngineError> {
    let resolved = resolve(Request {
        operation: Operation::Copy,
        sources: vec![source.to_path_buf()],
        destination: destination.to_path_buf(),
        options,
    })?;
    let (progress, control) = (Progress::new(), Control::default());
    let outcome = run(&resolved, engines, "test", &progress, &control)?;
    Ok(Copied {
        outcome,
        engine_bytes: progress.engine_bytes(),
        progress,
    })
}

/// The physical extents `filefrag -v` shows for `path`: (logical, physical,
/// length) in blocks.
pub fn physical_extents(path: &Path) -> Vec<(u64, u64, u64)> {
    let text = output("filefrag", &["-v".as_ref(), path.as_os_str()]);
    text.lines()
        .filter_map(|line| {
            // "   0:        0..     255:       3328..      3583:    256: ..."
            let fields: Vec<&str> = line.split(':').map(str::trim).collect();
            if fields.len() < 4 || fields[0].parse::<u64>().is_err() {
                return None;
            }
            let logical = fields[1].split("..").next()?.trim().parse().ok()?;
            let physical = fields[2].split("..").next()?.trim().parse().ok()?;
            let length = fields[3].parse().ok()?;
            Some((logical, physical, length))
        })
        .collect()
}

/// Disk usage in KiB, as `du -k` reports it.
pub fn du_kib(path: &Path) -> u64 {
    output("du", &["-k".as_ref(), path.as_os_str()])
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// What `rsync -naHX --checksum --itemize-changes SRC/ DST/` would change:
/// nothing, for an exact copy (contents, modes, owners, times, symlinks,
/// hard links, xattrs).
pub fn rsync_differences(source: &Path, target: &Path) -> String {
    let out = Command::new("rsync")
        .args(["-naHX", "--checksum", "--itemize-changes"])
        .arg(format!("{}/", source.display()))
        .arg(format!("{}/", target.display()))
        .output()
        .expect("rsync");
    assert!(
        out.status.success(),
        "rsync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Small files of every awkward size (empty, one byte, around a page, the
/// largest a batch takes, one more), more of them than one batch holds,
/// beside large files, symlinks and an empty directory.
pub fn small_files_tree(root: &Path) -> u64 {
    let sizes = [0usize, 1, 4095, 4096, 4097, 12_345, 65_535, 65_536, 65_537];
    let mut bytes = 0;
    for d in 0..3 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..70 {
            let len = sizes[(f + d) % sizes.len()];
            let file = dir.join(format!("f{f:03}"));
            write_file(&file, len, (d * 1000 + f) as u64);
            // Modes the umask keeps (0644, 0755, 0600) and clears (0666,
            // 0777): created exact, or set after.
            let mode = [0o644, 0o755, 0o666, 0o600, 0o777][f % 5];
            std::fs::set_permissions(
                &file,
                <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode),
            )
            .unwrap();
            bytes += len as u64;
        }
        std::os::unix::fs::symlink("f001", dir.join("link")).unwrap();
    }
    write_file(&root.join("large"), 3 << 20, 7);
    std::fs::create_dir(root.join("empty")).unwrap();
    // Read-only directories, nested: their modes come last, deepest first.
    let locked = root.join("locked/inner");
    std::fs::create_dir_all(&locked).unwrap();
    write_file(&locked.join("f"), 100, 1);
    for dir in [&locked, &root.join("locked")] {
        fs::set_permissions(
            dir,
            <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o555),
        )
        .unwrap();
    }
    bytes + (3 << 20) + 100
}

#[derive(Default)]
/// A journal that records what it is told, as lines.
pub struct Recorder {
    events: Mutex<Vec<String>>,
}

impl Journal for Recorder {
    fn item_started(&self, index: usize) {
        self.events.lock().unwrap().push(format!("started {index}"));
    }
    fn items_built(&self, built: &[(usize, CopyIdentity)]) {
        let mut events = self.events.lock().unwrap();
        for (index, _) in built {
            events.push(format!("built {index}"));
        }
    }
    fn item_done(&self, index: usize) {
        self.events.lock().unwrap().push(format!("done {index}"));
    }
    fn files_durable(&self, index: usize, relatives: &[PathBuf]) {
        self.events
            .lock()
            .unwrap()
            .push(format!("durable {index} {}", relatives.len()));
    }
    fn file_offset(&self, index: usize, relative: &Path, _: FileIdentity, offset: u64) {
        self.events
            .lock()
            .unwrap()
            .push(format!("offset {index} {} {offset}", relative.display()));
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// Reports of durable progress inside an item.
    pub fn durable_reports(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.starts_with("durable") || e.starts_with("offset"))
            .collect()
    }
}

/// Sets nanosecond times that no copy could get by accident (atime
/// 1,000,000,000.123456789, mtime 1,200,000,000.987654321), on the path
/// itself, not a symlink's target.
pub fn set_odd_times(path: &Path) {
    let times = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_200_000_000,
            tv_nsec: 987_654_321,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// The ordinary user (uid and gid) [`as_ordinary_user`] switches to.
pub const ORDINARY_USER: u32 = 2000;

/// Runs `work` on a thread that has switched to uid and gid 2000 (no
/// supplementary groups) the way copyd's job threads act as their caller:
/// per-thread credentials, which the engine's own threads inherit. Needs
/// root.
pub fn as_ordinary_user<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    use rustix::fs::{Gid, Uid};
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let (uid, gid) = (Uid::from_raw(ORDINARY_USER), Gid::from_raw(ORDINARY_USER));
                rustix::thread::set_thread_groups(&[]).unwrap();
                rustix::thread::set_thread_res_gid(gid, gid, gid).unwrap();
                rustix::thread::set_thread_res_uid(uid, uid, uid).unwrap();
                work()
            })
            .join()
            .unwrap()
    })
}
