//! Jobs that survive: copyd is killed with SIGKILL at several points of a
//! copy, started again on the same state directory, and must carry the job
//! on by itself (auto_resume) to a result identical to the source, with no
//! temporary file left behind and, for moves, no file lost on the way.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use copyd_tests::busctl::Busctl;
use copyd_tests::tree::{
    assert_files_equal, assert_trees_equal, copyd_temp_leftovers, make_big_file, make_tree,
    reference_copy, snapshot,
};
use copyd_tests::{Daemon, Policy, TestBus};

/// Waits until `done(bytes_done, files_done)` holds for the job, then kills
/// copyd with SIGKILL. Returns false (and kills nothing) if the job ended first.
fn kill_when(
    daemon: &mut Option<Daemon>,
    bus: &TestBus,
    job: &str,
    done: impl Fn(u64, u64) -> bool,
) -> bool {
    let busctl = Busctl::new(bus.address());
    let start = Instant::now();
    loop {
        let state = busctl.job_state(job);
        if matches!(state.as_str(), "completed" | "failed" | "cancelled") {
            return false;
        }
        if done(
            busctl.job_u64(job, "BytesDone"),
            busctl.job_u64(job, "FilesDone"),
        ) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "job {job} made no progress ({state})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = daemon.take().unwrap().kill9();
    *daemon = Some(Daemon::start_in(bus, dir));
    true
}

fn finish(bus: &TestBus, job: &str) {
    let busctl = Busctl::new(bus.address());
    let state = busctl.wait_job_end(job, Duration::from_secs(300));
    assert_eq!(
        state,
        "completed",
        "error: {:?}",
        busctl.job_prop(job, "ErrorMessage")
    );
}

fn opts_rate(rate: &'static str, recursive: bool) -> Vec<&'static str> {
    let mut opts = vec!["rate-limit", "t", rate];
    if recursive {
        opts.extend(["recursive", "b", "true"]);
    }
    opts
}

fn no_temporaries(dir: &Path) {
    let left = copyd_temp_leftovers(dir);
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// Copies a 1 GiB file at 200 MB/s (~5 s: durable offsets advance every
/// 2 s), kills copyd at 45% and 80%, and checks the job carries on to an
/// exact copy from durable offsets (its progress log holds them: it did not
/// start over). With `uncached`, the source's pages are dropped before the
/// copy and after every restart, so the pieces go by several streams.
/// Returns the last copyd, for more checks of its log.
fn big_file_survives_kills(name: &str, seed: u64, uncached: bool) -> Daemon {
    let bus = TestBus::start(Policy::Permissive);
    let mut daemon = Some(Daemon::start(&bus));
    let work = copyd_tests::scratch_dir(name);
    let (source, target) = (work.path().join("big"), work.path().join("copy"));
    make_big_file(&source, 1 << 30, seed);
    let drop_cache = || {
        if uncached {
            drop_from_cache(&source);
        }
    };
    drop_cache();
    let job = Busctl::new(bus.address()).copy(&[&source], &target, &opts_rate("200000000", false));
    let mut kills = 0;
    for fraction in [0.45, 0.8] {
        let at = ((1u64 << 30) as f64 * fraction) as u64;
        if kill_when(&mut daemon, &bus, &job, |bytes, _| bytes >= at) {
            kills += 1;
            // Whatever the killed run read is cached now.
            drop_cache();
            // The restarted copyd knows the job and carries it on.
            let state = Busctl::new(bus.address()).job_state(&job);
            assert!(
                ["queued", "running", "completed"].contains(&state.as_str()),
                "after restart: {state}"
            );
        }
    }
    assert!(
        kills >= 1,
        "the copy finished before any kill: nothing was tested"
    );
    finish(&bus, &job);
    assert_files_equal(&source, &target);
    no_temporaries(work.path());
    let daemon = daemon.take().unwrap();
    let log = std::fs::read_to_string(daemon.state_dir().join("jobs/1.log")).unwrap_or_default();
    assert!(
        log.contains("Offset"),
        "no durable offset was ever recorded: {log}"
    );
    daemon
}

/// Drops `path`'s pages from the page cache (GNU dd's nocache with no
/// data: POSIX_FADV_DONTNEED on the whole file), after syncing it.
fn drop_from_cache(path: &Path) {
    std::fs::File::open(path).unwrap().sync_all().unwrap();
    let status = std::process::Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .unwrap();
    assert!(status.success(), "dd could not drop the page cache");
}

#[test]
fn big_file_survives_kills_and_resumes_from_its_durable_offset() {
    big_file_survives_kills("recovery-big", 11, false);
}

/// The source's bytes not in the page cache: its pieces are copied by
/// several streams at once and may finish out of order, and the durable
/// offset must only ever cover pieces that were all finished.
#[test]
fn an_uncached_big_file_copied_in_streams_survives_kills() {
    let daemon = big_file_survives_kills("recovery-streams", 12, true);
    assert!(
        daemon
            .log_text()
            .contains("copying an uncached file in several streams"),
        "the copy never used streams: the test did not test them"
    );
}

#[test]
fn ten_thousand_files_survive_kills() {
    let bus = TestBus::start(Policy::Permissive);
    let mut daemon = Some(Daemon::start(&bus));
    let work = copyd_tests::scratch_dir("recovery-tree");
    let (source, target) = (work.path().join("src"), work.path().join("dst"));
    let stats = make_tree(&source, 10_000, 7);
    // Slow enough (~6 s) to be killed three times on the way.
    let rate = (stats.bytes / 6).max(1 << 20).to_string();
    let rate: &'static str = Box::leak(rate.into_boxed_str());
    let job = Busctl::new(bus.address()).copy(&[&source], &target, &opts_rate(rate, true));
    let total = stats.files as u64;
    let mut kills = 0;
    for fraction in [0.2, 0.5, 0.8] {
        let at = (total as f64 * fraction) as u64;
        if kill_when(&mut daemon, &bus, &job, |_, files| files >= at) {
            kills += 1;
        }
    }
    assert!(
        kills >= 2,
        "only {kills} kills landed before the copy finished"
    );
    finish(&bus, &job);
    assert_trees_equal(&source, &target);
    no_temporaries(work.path());
}

/// A job of many one-file items (`copy f000 … f149 dir/`), killed twice:
/// items are recorded done by unflushed `Done` lines of the progress log
/// (no checkpoint is rewritten per item), the job's end by one `Ended`
/// line. After each restart the items done are skipped, the item in flight
/// is redone, and every copy must come out exact.
#[test]
fn a_job_of_many_items_survives_kills() {
    const ITEMS: u64 = 150;
    const SIZE: u64 = 256 << 10;
    let bus = TestBus::start(Policy::Permissive);
    let mut daemon = Some(Daemon::start(&bus));
    let work = copyd_tests::scratch_dir("recovery-items");
    let (sources_dir, target) = (work.path().join("src"), work.path().join("dst"));
    std::fs::create_dir_all(&sources_dir).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    let sources: Vec<PathBuf> = (0..ITEMS)
        .map(|i| {
            let path = sources_dir.join(format!("f{i:03}"));
            make_big_file(&path, SIZE, 40 + i);
            path
        })
        .collect();
    // ~4 s of copying.
    let rate = (ITEMS * SIZE / 4).to_string();
    let rate: &'static str = Box::leak(rate.into_boxed_str());
    let sources: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let job = Busctl::new(bus.address()).copy(&sources, &target, &opts_rate(rate, false));
    let mut kills = 0;
    for fraction in [0.3, 0.7] {
        let at = (ITEMS as f64 * fraction) as u64;
        if kill_when(&mut daemon, &bus, &job, |_, files| files >= at) {
            kills += 1;
        }
    }
    assert!(kills >= 1, "the copy finished before any kill");
    finish(&bus, &job);
    assert_trees_equal(&sources_dir, &target);
    no_temporaries(work.path());
    let state = daemon.as_ref().unwrap().state_dir();
    let log = std::fs::read_to_string(state.join("jobs/1.log")).unwrap();
    let lines = |kind: &str| log.lines().filter(|l| l.contains(kind)).count();
    assert_eq!(lines("\"Done\""), ITEMS as usize, "{log}");
    assert_eq!(lines("\"Ended\""), 1, "{log}");
}

/// `copy -a a f000 … f059 b dir/` where a and b are one file: copyd is
/// killed after a is in place, and the resumed job links b to a's copy, as
/// an uninterrupted job does, instead of copying the file again.
#[test]
fn hard_links_across_items_survive_a_kill() {
    use std::os::unix::fs::MetadataExt;
    const FILLERS: u64 = 60;
    const SIZE: u64 = 256 << 10;
    let bus = TestBus::start(Policy::Permissive);
    let mut daemon = Some(Daemon::start(&bus));
    let work = copyd_tests::scratch_dir("recovery-links");
    let (sources_dir, target) = (work.path().join("src"), work.path().join("dst"));
    std::fs::create_dir_all(&sources_dir).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    make_big_file(&sources_dir.join("a"), SIZE, 7);
    std::fs::hard_link(sources_dir.join("a"), sources_dir.join("b")).unwrap();
    let mut sources = vec![sources_dir.join("a")];
    for i in 0..FILLERS {
        let path = sources_dir.join(format!("f{i:03}"));
        make_big_file(&path, SIZE, 60 + i);
        sources.push(path);
    }
    sources.push(sources_dir.join("b"));
    // ~4 s of copying.
    let rate: &'static str = Box::leak(((FILLERS + 2) * SIZE / 4).to_string().into_boxed_str());
    let mut opts = opts_rate(rate, false);
    opts.extend(["preserve", "as", "3", "mode", "timestamps", "links"]);
    let sources: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let job = Busctl::new(bus.address()).copy(&sources, &target, &opts);
    assert!(
        kill_when(&mut daemon, &bus, &job, |_, files| files >= FILLERS / 3),
        "the copy finished before the kill"
    );
    finish(&bus, &job);
    assert_trees_equal(&sources_dir, &target);
    let ino = |name: &str| std::fs::metadata(target.join(name)).unwrap().ino();
    assert_eq!(
        ino("a"),
        ino("b"),
        "b was copied again, not linked to a's copy"
    );
    no_temporaries(work.path());
}

/// A copy without sync (sync=false) survives kill -9 too: each item is
/// still renamed into place whole, and the item in flight is redone from its
/// start. Its progress log never vouches for a file or an offset, not even
/// after a restart (the resumed job keeps the option from its checkpoint:
/// with sync, its seconds of copying would make group commits).
#[test]
fn a_tree_copied_without_sync_survives_kills() {
    let bus = TestBus::start(Policy::Permissive);
    let mut daemon = Some(Daemon::start(&bus));
    let work = copyd_tests::scratch_dir("recovery-nosync");
    let (source, target) = (work.path().join("src"), work.path().join("dst"));
    let stats = make_tree(&source, 1_500, 8);
    // ~4 s of copying.
    let rate = (stats.bytes / 4).max(1 << 20).to_string();
    let rate: &'static str = Box::leak(rate.into_boxed_str());
    let mut opts = opts_rate(rate, true);
    opts.extend(["sync", "b", "false"]);
    let job = Busctl::new(bus.address()).copy(&[&source], &target, &opts);
    let mut kills = 0;
    for fraction in [0.3, 0.7] {
        let at = (stats.files as f64 * fraction) as u64;
        if kill_when(&mut daemon, &bus, &job, |_, files| files >= at) {
            kills += 1;
            assert!(
                !target.exists(),
                "a partial tree stands under its final name"
            );
        }
    }
    assert!(kills >= 1, "the copy finished before any kill");
    finish(&bus, &job);
    assert_trees_equal(&source, &target);
    no_temporaries(work.path());
    let state = daemon.as_ref().unwrap().state_dir();
    let log = std::fs::read_to_string(state.join("jobs/1.log")).unwrap_or_default();
    assert!(log.contains("Started"), "no progress log: {log:?}");
    let reports = log
        .lines()
        .filter(|l| l.contains("Durable") || l.contains("Offset"))
        .count();
    assert_eq!(
        reports, 0,
        "a copy without sync reported durable progress ({reports} log entries)"
    );
}

#[test]
fn cross_filesystem_move_loses_nothing_when_killed() {
    let bus = TestBus::start(Policy::Permissive);
    let mut daemon = Some(Daemon::start(&bus));
    // Source on a tmpfs of its own, destination on /tmp's file system: not
    // a rename.
    let shm = TmpfsMount::new();
    let work = copyd_tests::scratch_dir("recovery-move");
    let (source, target, reference) = (
        shm.dir.path().join("src"),
        work.path().join("dst"),
        work.path().join("ref"),
    );
    let stats = make_tree(&source, 2_000, 3);
    make_big_file(&source.join("big"), 256 << 20, 5);
    reference_copy(&source, &reference);
    let rate = ((stats.bytes + (256 << 20)) / 5).to_string();
    let rate: &'static str = Box::leak(rate.into_boxed_str());
    let busctl = Busctl::new(bus.address());
    let mut opts = opts_rate(rate, false);
    opts.extend(["recursive", "b", "true"]);
    let out = busctl.start(
        "Move",
        &[copyd_tests::busctl::path_bytes(&source)],
        copyd_tests::busctl::path_bytes(&target),
        &opts,
    );
    out.assert_success();
    let job = copyd_tests::busctl::parse_busctl_object_path(&out.stdout_str());
    let mut kills = 0;
    for fraction in [0.3, 0.7] {
        let at = ((stats.bytes + (256 << 20)) as f64 * fraction) as u64;
        if kill_when(&mut daemon, &bus, &job, |bytes, _| bytes >= at) {
            kills += 1;
            // Every file is whole at the source or at the destination.
            let (src_now, dst_now, want) =
                (snapshot(&source), snapshot(&target), snapshot(&reference));
            for (path, entry) in &want {
                assert!(
                    src_now.get(path) == Some(entry) || dst_now.get(path) == Some(entry),
                    "{} is whole in neither place after a kill",
                    path.display()
                );
            }
        }
    }
    assert!(kills >= 1, "the move finished before any kill");
    finish(&bus, &job);
    assert!(!source.exists(), "the moved source must be gone");
    assert_trees_equal(&reference, &target);
    no_temporaries(work.path());
}

/// A tmpfs mounted on a temporary directory (the tests run as root), so a
/// move from it crosses file systems. Unmounted on drop.
struct TmpfsMount {
    dir: tempfile::TempDir,
}

impl TmpfsMount {
    fn new() -> TmpfsMount {
        let dir = copyd_tests::scratch_dir("tmpfs");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1g", "copyd-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        TmpfsMount { dir }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A job copyd runs as an unprivileged caller (not as root) also survives a
/// kill: its checkpoints are written with copyd's rights, and after the
/// restart it runs as the same user again.
#[test]
fn a_users_job_survives_a_kill_and_resumes_as_that_user() {
    use copyd_tests::polkit::{ensure_user, SecureEnv, USER};
    use std::os::unix::fs::MetadataExt;
    let Some(mut env) = SecureEnv::start() else {
        return;
    };
    let ids = ensure_user(USER);
    let home = env.user_dir(USER, "user-files");
    let source = home.join("big");
    make_big_file(&source, 512 << 20, 21);
    copyd_tests::polkit::chown(&source, ids);
    let target = home.join("copy");
    let out = env.start_as(
        USER,
        "Copy",
        &[&source],
        &target,
        &["rate-limit", "t", "150000000"],
    );
    out.assert_success();
    let job = copyd_tests::busctl::parse_busctl_object_path(&out.stdout_str());
    let busctl = Busctl::new(env.address());
    busctl.wait_job_state(&job, Duration::from_secs(30), |_| {
        busctl.job_u64(&job, "BytesDone") > 400 << 20
    });
    env.daemon.crash_and_restart(&env.bus);
    finish(&env.bus, &job);
    assert_files_equal(&source, &target);
    assert_eq!(
        std::fs::metadata(&target).unwrap().uid(),
        ids.uid,
        "the copy belongs to the user"
    );
    assert!(
        !env.daemon.log_text().contains("could not append"),
        "checkpoint writes failed:\n{}",
        env.daemon.log_text()
    );
    let log =
        std::fs::read_to_string(env.daemon.state_dir().join("jobs/1.log")).unwrap_or_default();
    assert!(
        log.contains("Offset"),
        "no durable offset recorded for the user's job: {log}"
    );
}
