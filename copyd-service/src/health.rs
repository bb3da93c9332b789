//! `Health()`: what an operator asks first. Version and uptime; the
//! engines and why any is missing; jobs by state; whether checkpoints can
//! be written; free space where jobs write; the recent error rate; alerts.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zbus::{OwnedVariant as OwnedValue, Variant as Value};

use copyd_engine::EngineId;

use crate::jobs::{JobManager, JobState};
use crate::observe::Observer;

#[derive(Debug, Clone, PartialEq)]
pub struct FileSystem {
    pub mount_point: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
    pub used_percent: f64,
}

/// The nearest existing ancestor of `path` (a destination may not exist
/// yet).
fn existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

/// Where the file system holding `path` is mounted: the highest ancestor
/// on the same device.
fn mount_point(path: &Path) -> PathBuf {
    let dev = std::fs::metadata(path).map(|m| m.dev()).ok();
    let mut top = path.to_path_buf();
    for ancestor in path.ancestors().skip(1) {
        if std::fs::metadata(ancestor).map(|m| m.dev()).ok() != dev {
            break;
        }
        top = ancestor.to_path_buf();
    }
    top
}

/// The file systems holding `paths`, each once.
pub fn file_systems<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> Vec<FileSystem> {
    let mut out: Vec<FileSystem> = Vec::new();
    for path in paths {
        let Some(path) = existing(path) else { continue };
        let mount = mount_point(path).display().to_string();
        if out.iter().any(|fs| fs.mount_point == mount) {
            continue;
        }
        let Ok(stat) = rustix::fs::statvfs(path) else {
            continue;
        };
        let total = stat.f_blocks * stat.f_frsize;
        let free = stat.f_bavail * stat.f_frsize;
        let used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize;
        let used_percent = if total > 0 {
            used as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        out.push(FileSystem {
            mount_point: mount,
            free_bytes: free,
            total_bytes: total,
            used_percent,
        });
    }
    out
}

/// Why an engine is not in the set.
fn why_missing(jobs: &JobManager, engine: EngineId) -> String {
    match engine {
        EngineId::IoUring if !jobs.config().engine.enable_io_uring => {
            "turned off: [performance] enable_io_uring = false".into()
        }
        EngineId::IoUring => {
            let ring = jobs.config().engine.io_uring();
            format!(
                "the kernel refused a ring of {} operations with {} KiB of registered buffers (io_uring unsupported, disabled by sysctl or seccomp, or over RLIMIT_MEMLOCK)",
                ring.queue_depth,
                ring.buffer_bytes >> 10
            )
        }
        EngineId::CopyFileRange => "this kernel has no copy_file_range".into(),
        _ => "not offered by this build".into(),
    }
}

/// Whether `dir` takes a new file now (a checkpoint is one).
fn writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".health-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|err| err.to_string())
}

/// Whose jobs' file systems a health report may show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Everyone,
    Uid(u32),
    Nobody,
}

impl Viewer {
    fn may_see(self, owner: u32) -> bool {
        match self {
            Viewer::Everyone => true,
            Viewer::Uid(uid) => uid == owner,
            Viewer::Nobody => false,
        }
    }
}

pub fn health(
    jobs: &JobManager,
    observer: &Observer,
    viewer: Viewer,
) -> HashMap<String, OwnedValue> {
    let own = |v: Value<'_>| OwnedValue::try_from(v).expect("no fds in health values");
    let mut out = HashMap::new();
    out.insert(
        "Version".into(),
        own(Value::from(env!("CARGO_PKG_VERSION"))),
    );
    out.insert(
        "UptimeSeconds".into(),
        own(Value::U64(observer.uptime().as_secs())),
    );
    let names = jobs.engines.names();
    out.insert(
        "Engines".into(),
        own(Value::from(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )),
    );
    let missing: HashMap<String, String> = EngineId::ALL
        .into_iter()
        .filter(|&e| !jobs.engines.has(e))
        .map(|e| (e.to_string(), why_missing(jobs, e)))
        .collect();
    out.insert("EnginesUnavailable".into(), own(Value::from(missing)));
    // The io_uring ring as configured ([performance] io_queue_depth and
    // default_buffer_size), whether or not the kernel took it.
    let ring = jobs.config().engine.io_uring();
    out.insert(
        "IoUringQueueDepth".into(),
        own(Value::U32(ring.queue_depth)),
    );
    out.insert(
        "IoUringBufferBytes".into(),
        own(Value::U64(
            (ring.buffer_bytes / ring.queue_depth.max(1) as usize) as u64,
        )),
    );
    let (mut active, mut queued, mut paused, mut interrupted) = (0u32, 0u32, 0u32, 0u32);
    let mut destinations = Vec::new();
    for job in jobs.list() {
        match job.state() {
            JobState::Running => active += 1,
            JobState::Queued => queued += 1,
            JobState::Paused => paused += 1,
            JobState::Interrupted => interrupted += 1,
            _ => continue,
        }
        if viewer.may_see(job.caller.uid) {
            destinations.push(job.destination.clone());
        }
    }
    out.insert("JobsActive".into(), own(Value::U32(active)));
    out.insert("JobsQueued".into(), own(Value::U32(queued)));
    out.insert("JobsPaused".into(), own(Value::U32(paused)));
    out.insert("JobsInterrupted".into(), own(Value::U32(interrupted)));
    let (dir, problem) = match jobs.config().state_dir() {
        None => (
            String::new(),
            "no state directory ($HOME is not set)".to_owned(),
        ),
        Some(dir) if !jobs.is_persistent() => (
            dir.display().to_string(),
            jobs.health().trim_start_matches("ok").to_owned(),
        ),
        Some(dir) => (
            dir.display().to_string(),
            writable(&dir).err().unwrap_or_default(),
        ),
    };
    out.insert("CheckpointDir".into(), own(Value::from(dir)));
    out.insert(
        "CheckpointDirWritable".into(),
        own(Value::Bool(problem.is_empty())),
    );
    out.insert("CheckpointProblem".into(), own(Value::from(problem)));
    let file_systems: Vec<(String, u64, u64, f64)> = file_systems(destinations.iter())
        .into_iter()
        .map(|fs| {
            (
                fs.mount_point,
                fs.free_bytes,
                fs.total_bytes,
                fs.used_percent,
            )
        })
        .collect();
    out.insert("FileSystems".into(), own(Value::from(file_systems)));
    out.insert(
        "ErrorsPerMinute".into(),
        own(Value::F64(observer.errors_per_minute())),
    );
    out.insert("Alerts".into(), own(Value::from(alert_tuples())));
    out
}

/// The active alerts as the contract carries them: (id, severity, message,
/// since µs).
pub fn alert_tuples() -> Vec<(String, String, String, u64)> {
    crate::alerts::active()
        .into_iter()
        .map(|a| (a.id, a.severity.to_owned(), a.message, a.since))
        .collect()
}

/// Where the file system of device `dev` (an st_dev) is mounted, from
/// /proc/self/mountinfo (its first mount, if several); the device's
/// numbers when it is not found.
pub fn mount_point_of_device(dev: u64) -> String {
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let wanted = format!("{major}:{minor}");
    let found = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|table| {
            table.lines().find_map(|line| {
                let mut fields = line.split(' ');
                let numbers = fields.nth(2)?;
                let mount_point = fields.nth(1)?;
                (numbers == wanted).then(|| unescape_mount_point(mount_point))
            })
        });
    found.unwrap_or_else(|| format!("device {wanted}"))
}

/// mountinfo writes space, tab, newline and backslash in mount points as
/// octal escapes (`\040`).
fn unescape_mount_point(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(digits.iter().fold(0u8, |n, d| n * 8 + (d - b'0')));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
