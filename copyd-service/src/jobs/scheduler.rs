//! Who runs next: at most `max_concurrent_jobs` jobs at once, by priority
//! (higher first) then arrival, and, by default, one job at a time per
//! physical disk, while jobs on different disks run side by side.
//!
//! A job's disks are those under its sources and its targets' directories.
//! A file system's device number (st_dev) is mapped to its whole disk
//! through sysfs: a partition (`/sys/dev/block/MAJ:MIN/partition` exists)
//! counts as its parent disk, so two partitions of one disk serialize. File
//! systems without a block device (tmpfs, and btrfs, whose st_dev is an
//! anonymous number) count as devices of their own.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

/// A place in the queue: higher priority first, then earlier arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket {
    /// Negated priority, so that the natural order is the queue's order.
    neg_priority: i64,
    seq: u64,
}

impl Ticket {
    pub fn new(priority: i32, seq: u64) -> Self {
        Ticket {
            neg_priority: -(priority as i64),
            seq,
        }
    }
}

/// The disks of these paths' file systems, as names ("vda", "anon:0:42"),
/// sorted, each once. Each file system is looked up once (a job of many
/// items has few).
pub fn disks_of<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Vec<String> {
    // Each path once: the items of `copy f1 ... f500 dir/` share their
    // target's directory.
    let mut seen = std::collections::HashSet::new();
    let mut devices: Vec<u64> = paths
        .into_iter()
        .filter(|path| seen.insert(*path))
        .filter_map(|path| Some(std::fs::symlink_metadata(path).ok()?.dev()))
        .collect();
    devices.sort_unstable();
    devices.dedup();
    let mut disks: Vec<String> = devices.into_iter().map(disk_of_device).collect();
    disks.sort();
    disks.dedup();
    disks
}

/// The disk of a device number, looked up in sysfs once per device, not
/// for every job (a lookup is a canonicalize of the sysfs path, about ten
/// readlinks here, and a stat). A number that comes to name another disk
/// (one unplugged, another plugged in) keeps its old name: it only decides
/// which jobs wait for each other.
fn disk_of_device(dev: u64) -> String {
    static KNOWN: Mutex<BTreeMap<u64, String>> = Mutex::new(BTreeMap::new());
    if let Some(disk) = KNOWN.lock().unwrap().get(&dev) {
        return disk.clone();
    }
    let disk = look_up_disk(dev);
    KNOWN.lock().unwrap().insert(dev, disk.clone());
    disk
}

fn look_up_disk(dev: u64) -> String {
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    if major == 0 {
        return format!("anon:{major}:{minor}");
    }
    let sys = format!("/sys/dev/block/{major}:{minor}");
    let real = std::fs::canonicalize(&sys).ok();
    let disk = match &real {
        Some(real) if Path::new(&sys).join("partition").exists() => {
            real.parent().and_then(Path::file_name)
        }
        Some(real) => real.file_name(),
        None => None,
    };
    disk.map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("dev:{major}:{minor}"))
}

#[derive(Default)]
struct State {
    running: usize,
    busy_disks: HashMap<String, usize>,
    /// Jobs waiting for a slot (not paused), with their disks.
    waiting: BTreeMap<Ticket, Vec<String>>,
}

pub struct Scheduler {
    max_running: AtomicUsize,
    per_disk: bool,
    state: Mutex<State>,
    changed: Notify,
}

/// A running job's place; dropping it frees the place and the disks.
pub struct Slot<'a> {
    scheduler: &'a Scheduler,
    disks: Vec<String>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut state = self.scheduler.state.lock().unwrap();
        state.running -= 1;
        if self.scheduler.per_disk {
            for disk in &self.disks {
                if let Some(count) = state.busy_disks.get_mut(disk) {
                    *count -= 1;
                    if *count == 0 {
                        state.busy_disks.remove(disk);
                    }
                }
            }
        }
        drop(state);
        self.scheduler.changed.notify_waiters();
    }
}

impl Scheduler {
    pub fn new(max_running: usize, per_disk: bool) -> Self {
        Scheduler {
            max_running: AtomicUsize::new(max_running.max(1)),
            per_disk,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    /// A new limit (configuration reload): more slots start waiting jobs
    /// now; fewer let running jobs finish and start no new ones until
    /// they are under it.
    pub fn set_max_running(&self, max_running: usize) {
        self.max_running
            .store(max_running.max(1), Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    fn disks_free(&self, state: &State, disks: &[String]) -> bool {
        !self.per_disk || disks.iter().all(|d| !state.busy_disks.contains_key(d))
    }

    /// Starts the job holding `ticket` if a slot is free, its disks are
    /// free, and no job ahead of it in the queue could start instead.
    /// Otherwise it (stays) queued.
    pub fn try_start(&self, ticket: Ticket, disks: &[String]) -> Option<Slot<'_>> {
        let mut state = self.state.lock().unwrap();
        state.waiting.insert(ticket, disks.to_vec());
        if state.running >= self.max_running.load(Ordering::Relaxed)
            || !self.disks_free(&state, disks)
        {
            return None;
        }
        let ahead_could_start = state
            .waiting
            .range(..ticket)
            .any(|(_, their_disks)| self.disks_free(&state, their_disks));
        if ahead_could_start {
            return None;
        }
        state.waiting.remove(&ticket);
        state.running += 1;
        if self.per_disk {
            for disk in disks {
                *state.busy_disks.entry(disk.clone()).or_default() += 1;
            }
        }
        Some(Slot {
            scheduler: self,
            disks: disks.to_vec(),
        })
    }

    /// Takes a job out of the queue (paused or cancelled while waiting).
    pub fn leave(&self, ticket: Ticket) {
        let removed = self.state.lock().unwrap().waiting.remove(&ticket).is_some();
        if removed {
            self.changed.notify_waiters();
        }
    }

    /// Resolves when something changed that may let a waiting job start.
    /// Create it before `try_start` and enable it, so no change is missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disks(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_job_per_disk_and_priority_first() {
        let scheduler = Scheduler::new(4, true);
        let a = scheduler
            .try_start(Ticket::new(0, 1), &disks(&["sda"]))
            .expect("free");
        // Same disk: waits even though slots are free.
        assert!(scheduler
            .try_start(Ticket::new(0, 2), &disks(&["sda", "sdb"]))
            .is_none());
        // Another disk: runs side by side.
        let c = scheduler
            .try_start(Ticket::new(0, 3), &disks(&["sdc"]))
            .expect("other disk");
        // A later, higher-priority job on sda goes ahead of job 2.
        assert!(scheduler
            .try_start(Ticket::new(5, 4), &disks(&["sda"]))
            .is_none());
        drop(a);
        assert!(scheduler
            .try_start(Ticket::new(0, 2), &disks(&["sda", "sdb"]))
            .is_none());
        let d = scheduler
            .try_start(Ticket::new(5, 4), &disks(&["sda"]))
            .expect("priority");
        drop((c, d));
        assert!(scheduler
            .try_start(Ticket::new(0, 2), &disks(&["sda", "sdb"]))
            .is_some());
    }

    #[test]
    fn the_slot_limit_holds_without_disk_serialization() {
        let scheduler = Scheduler::new(2, false);
        let _a = scheduler
            .try_start(Ticket::new(0, 1), &disks(&["sda"]))
            .unwrap();
        let _b = scheduler
            .try_start(Ticket::new(0, 2), &disks(&["sda"]))
            .unwrap();
        assert!(scheduler
            .try_start(Ticket::new(9, 3), &disks(&["sdb"]))
            .is_none());
    }

    #[test]
    fn partitions_map_to_their_disk() {
        // Whatever / is on, it has a name, and two paths on it share it.
        let root = disks_of([Path::new("/")]);
        assert_eq!(root.len(), 1);
        assert_eq!(disks_of([Path::new("/etc"), Path::new("/")]), root);
        let with_proc = disks_of([Path::new("/proc"), Path::new("/")]);
        assert_eq!(with_proc.len(), 2);
        assert!(with_proc.iter().any(|disk| disk.starts_with("anon:")));
        assert!(with_proc.contains(&root[0]));
    }
}
