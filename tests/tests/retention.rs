//! Finished jobs are kept within bounds: by time (job_retention_seconds,
//! tests/tests/jobs.rs) and by count (job_retention_count), so that a busy
//! copyd's memory does not grow with every job it ever finished.

mod raw_client;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use copyd_tests::busctl::Busctl;
use copyd_tests::{Daemon, Policy, TestBus, MANAGER_IFACE, MANAGER_PATH};
use futures_util::stream::{FuturesUnordered, StreamExt};
use zbus::Variant;

const JOBS: usize = 10_000;
/// Copy calls in flight at once.
const IN_FLIGHT: usize = 64;

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn count_files(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(suffix)
        })
        .count()
}

/// Makes `JOBS` jobs of a tiny file each over D-Bus, with at most
/// `IN_FLIGHT` made and not yet completed (copyd's queue is not what is
/// measured here). Returns how long it took until the last completed.
fn copy_many(address: &str, source: &Path, targets: &Path) -> Duration {
    raw_client::on_bus(address, |connection| async move {
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(copyd_tests::JOB_IFACE)
            .member("Completed")
            .build()
            .unwrap();
        let mut completed_signals = zbus::MessageStream::for_match_rule(rule, &connection, None)
            .await
            .unwrap();
        let started = Instant::now();
        let mut calls = FuturesUnordered::new();
        let (mut next, mut completed) = (0, 0);
        while completed < JOBS {
            while next < JOBS && next - completed < IN_FLIGHT {
                let connection = connection.clone();
                let source = source.as_os_str().as_encoded_bytes().to_vec();
                let target = targets.join(format!("{next}"));
                let target = target.as_os_str().as_encoded_bytes().to_vec();
                calls.push(async move {
                    // No fsyncs: this measures memory, not the disk.
                    let options = HashMap::from([("sync", Variant::Bool(false))]);
                    connection
                        .call_method(
                            Some(copyd_tests::BUS_NAME),
                            MANAGER_PATH,
                            Some(MANAGER_IFACE),
                            "Copy",
                            &(vec![source], target, options),
                        )
                        .await
                });
                next += 1;
            }
            tokio::select! {
                Some(reply) = calls.next() => {
                    reply.unwrap_or_else(|err| panic!("Copy failed: {err}"));
                }
                signal = completed_signals.next() => {
                    signal.expect("the bus is there").unwrap();
                    completed += 1;
                }
            }
        }
        started.elapsed()
    })
}

/// 10,000 jobs finished within the last hour: only the newest
/// job_retention_count (1000 by default) stay, the others leave the bus
/// with their checkpoints and an InterfacesRemoved each, and copyd stays
/// under 100 MiB of RSS.
#[test]
fn ten_thousand_finished_jobs_keep_copyd_under_100_mib() {
    let bus = TestBus::start(Policy::Permissive);
    // Sources, copies and checkpoints in memory: the point is what copyd
    // holds, not how fast a disk takes fsyncs.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("copyd-test-retention-")
            .tempdir_in(shm)
            .unwrap()
    } else {
        copyd_tests::scratch_dir("retention")
    };
    let state = dir.path().join("state");
    // (/dev/shm is under /dev, one of the default system_paths.)
    let config = format!(
        "job_retention_seconds = 3600\nmax_concurrent_jobs = 4\nstate_dir = \"{}\"\n\
         [security]\nsystem_paths = [\"/proc\", \"/sys\"]\n",
        state.display()
    );
    let daemon = Daemon::start_with_config(&bus, Some(&config));
    let source = dir.path().join("source");
    std::fs::write(&source, b"a tiny file").unwrap();
    let targets = dir.path().join("copies");
    std::fs::create_dir(&targets).unwrap();
    let b = Busctl::new(bus.address());
    let removed = InterfacesRemoved::listen(bus.address());
    let rss_at_start = vm_rss_kib(daemon.pid());

    let took = copy_many(bus.address(), &source, &targets);
    let manager_u64 = |name: &str| {
        b.get_property(MANAGER_PATH, MANAGER_IFACE, name)
            .unwrap()
            .as_u64()
            .unwrap()
    };
    assert_eq!(manager_u64("ActiveJobs") + manager_u64("QueuedJobs"), 0);
    assert_eq!(count_files(&targets, ""), JOBS);
    let rss = vm_rss_kib(daemon.pid());
    eprintln!(
        "{JOBS} jobs ({IN_FLIGHT} at most unfinished): made and completed in {:.1} s \
         ({:.0} jobs/s); copyd's RSS {} KiB at start, {} KiB after",
        took.as_secs_f64(),
        JOBS as f64 / took.as_secs_f64(),
        rss_at_start,
        rss
    );

    // The newest 1000 stay, the oldest went, with their checkpoints.
    let listed = || {
        b.call_json(MANAGER_PATH, MANAGER_IFACE, "ListJobs", "", &[])["data"][0]
            .as_array()
            .unwrap()
            .len()
    };
    let settling = Instant::now();
    while listed() > 1000 && settling.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        listed(),
        1000,
        "finished jobs kept beyond job_retention_count"
    );
    b.call(MANAGER_PATH, MANAGER_IFACE, "GetJob", "s", &["1".into()])
        .assert_failure();
    b.call(
        MANAGER_PATH,
        MANAGER_IFACE,
        "GetJob",
        "s",
        &[JOBS.to_string()],
    )
    .assert_success();
    assert_eq!(count_files(&state.join("jobs"), ".job"), 1000);
    assert_eq!(removed.count(JOBS - 1000), JOBS - 1000);
    assert!(
        rss < 100 << 10,
        "copyd holds {rss} KiB with {JOBS} jobs finished: over 100 MiB"
    );
}

/// Counts the manager's InterfacesRemoved signals, on a thread of its own.
struct InterfacesRemoved {
    seen: std::sync::mpsc::Receiver<()>,
}

impl InterfacesRemoved {
    /// Subscribed when this returns.
    fn listen(address: &str) -> InterfacesRemoved {
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let address = address.to_owned();
        std::thread::spawn(move || {
            raw_client::on_bus(&address, |connection| async move {
                let rule = zbus::MatchRule::builder()
                    .msg_type(zbus::message::Type::Signal)
                    .interface("org.freedesktop.DBus.ObjectManager")
                    .member("InterfacesRemoved")
                    .build()
                    .unwrap();
                let mut stream = zbus::MessageStream::for_match_rule(rule, &connection, None)
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                while let Some(Ok(_)) = stream.next().await {
                    if seen_tx.send(()).is_err() {
                        break;
                    }
                }
            })
        });
        ready.recv_timeout(Duration::from_secs(10)).unwrap();
        InterfacesRemoved { seen }
    }

    /// How many came, waiting up to 10 s for `expected`.
    fn count(&self, expected: usize) -> usize {
        let mut n = 0;
        while n < expected {
            match self.seen.recv_timeout(Duration::from_secs(10)) {
                Ok(()) => n += 1,
                Err(_) => break,
            }
        }
        n
    }
}
