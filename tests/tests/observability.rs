//! Issue 17: the configuration operators were given, Prometheus metrics,
//! health and alerts, each on a real copyd on a private bus.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use copyd_tests::busctl::Busctl;
use copyd_tests::cmd::run;
use copyd_tests::tree::make_big_file;
use copyd_tests::{bins, Daemon, Policy, TestBus, MANAGER_IFACE, MANAGER_PATH};

/// A port nothing listens on now (the kernel's pick, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET /metrics, the body.
fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics listen");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of one series (`name{labels}` exactly as rendered), 0 if absent.
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// The sum over every series of metric `name` (all label values).
fn sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn metric_names(metrics: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("copyd_"))
        .map(|l| {
            l.split(['{', ' '])
                .next()
                .unwrap()
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
                .to_owned()
        })
        .collect()
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

#[test]
fn metrics_move_by_exactly_the_bytes_and_files_copied() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("metrics");
    let port = free_port();
    let config = format!(
        "state_dir = {}\njob_retention_seconds = 600\n[monitoring]\nenable_metrics = true\nmetrics_port = {port}\n",
        quoted(&dir.path().join("state"))
    );
    let _daemon = Daemon::start_with_config(&bus, Some(&config));
    let b = Busctl::new(bus.address());

    let before = scrape(port);
    let names = metric_names(&before);
    assert!(
        names.len() >= 20,
        "{} copyd_ metrics: {names:?}",
        names.len()
    );
    for required in [
        "copyd_jobs_total",
        "copyd_jobs_active",
        "copyd_jobs_queued",
        "copyd_bytes_transferred_total",
        "copyd_files_transferred_total",
        "copyd_transfer_rate_bytes_per_second",
        "copyd_engine_operations_total",
        "copyd_errors_total",
        "copyd_retries_total",
        "copyd_checkpoint_writes_total",
        "copyd_checkpoint_failures_total",
        "copyd_auth_denials_total",
        "copyd_memory_resident_bytes",
        "copyd_open_fds",
        "copyd_verify_mismatches_total",
        "copyd_alerts_active",
        "copyd_build_info",
    ] {
        assert!(names.contains(required), "no {required} in:\n{before}");
    }
    assert_eq!(
        value(
            &before,
            &format!(
                "copyd_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );

    // M files of odd sizes, N bytes together, copied as M sources into a
    // directory: the job counts M entries (a copied directory would count
    // as one more).
    let sources: Vec<_> = (0..7u64)
        .map(|i| {
            let path = dir.path().join(format!("f{i}"));
            make_big_file(&path, 1000 + i * 77_777, i);
            path
        })
        .collect();
    let n: u64 = sources
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let m = sources.len() as f64;
    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let refs: Vec<&Path> = sources.iter().map(|p| p.as_path()).collect();
    let job = b.copy(&refs, &dest, &[]);
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(30)), "completed");

    let completed = "copyd_jobs_total{operation=\"copy\",state=\"completed\"}";
    let mut after = String::new();
    wait_until(
        Duration::from_secs(5),
        "the job's end in the metrics",
        || {
            after = scrape(port);
            value(&after, completed) == value(&before, completed) + 1.0
        },
    );
    let bytes = sum(&after, "copyd_bytes_transferred_total")
        - sum(&before, "copyd_bytes_transferred_total");
    let files = value(&after, "copyd_files_transferred_total")
        - value(&before, "copyd_files_transferred_total");
    assert_eq!((bytes, files), (n as f64, m), "N = {n}, M = {m}\n{after}");
    assert!(
        value(&after, "copyd_dbus_calls_total{method=\"Copy\"}") >= 1.0,
        "{after}"
    );
    assert!(
        value(&after, "copyd_checkpoint_writes_total") >= 1.0,
        "{after}"
    );
    assert!(
        value(&after, "copyd_job_duration_seconds_count") >= 1.0,
        "{after}"
    );
    assert!(
        value(&after, "copyd_queue_wait_seconds_count") >= 1.0,
        "{after}"
    );
    assert!(
        value(&after, "copyd_memory_resident_bytes") > 1e6,
        "{after}"
    );
    assert!(value(&after, "copyd_open_fds") >= 3.0, "{after}");
    println!(
        "copied N = {n} bytes in M = {m} files; {} copyd_ metrics",
        metric_names(&after).len()
    );

    // Anything but GET /metrics is not served.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /other HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}

#[test]
fn with_metrics_off_nothing_listens() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("metrics-off");
    let port = free_port();
    let config = format!(
        "state_dir = {}\n[monitoring]\nenable_metrics = false\nmetrics_port = {port}\n",
        quoted(&dir.path().join("state"))
    );
    let _daemon = Daemon::start_with_config(&bus, Some(&config));
    let b = Busctl::new(bus.address());
    // copyd is up and answering...
    b.get_property(MANAGER_PATH, MANAGER_IFACE, "Version")
        .unwrap();
    // ...and has no listener.
    let err = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// The file operators were given, with its paths and port pointed at this
/// test's own.
fn operators_file(checkpoints: &Path, port: u16, enable_io_uring: bool) -> String {
    format!(
        r#"[daemon]
socket_path = "/run/copyd.sock"
max_concurrent_jobs = 10
checkpoint_dir = {}
[performance]
default_buffer_size = "64KB"
io_queue_depth = 128
enable_io_uring = {enable_io_uring}
[security]
max_file_size = "100GB"
max_path_length = 4096
allowed_extensions = []
blocked_extensions = [".exe", ".bat", ".cmd"]
system_paths = ["/proc", "/sys", "/dev"]
require_privilege_for_system = true
[monitoring]
enable_metrics = true
metrics_port = {port}
log_level = "info"
"#,
        quoted(checkpoints)
    )
}

fn health(b: &Busctl) -> serde_json::Value {
    b.call_json(MANAGER_PATH, MANAGER_IFACE, "GetHealth", "", &[])["data"][0].clone()
}

/// A copy that the [security] rules refuse: the error and its message.
fn refused(b: &Busctl, source: &Path, dest: &Path) -> String {
    let out = b.start(
        "Copy",
        &[copyd_tests::busctl::path_bytes(source)],
        copyd_tests::busctl::path_bytes(dest),
        &[],
    );
    assert!(
        !out.success(),
        "copied {} although refused",
        source.display()
    );
    out.stderr_str()
}

#[test]
fn the_operators_config_is_accepted_and_every_key_takes_effect() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("opconf");
    let checkpoints = dir.path().join("checkpoints");
    std::fs::create_dir(&checkpoints).unwrap();
    let port = free_port();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, operators_file(&checkpoints, port, true)).unwrap();
    let check = run(Command::new(bins::copyd())
        .arg("--check-config")
        .arg("--config")
        .arg(&file));
    check.assert_success();
    assert_eq!(check.stdout_str().trim(), format!("{}: ok", file.display()));

    let daemon = Daemon::start_with_config(&bus, Some(&operators_file(&checkpoints, port, true)));
    let b = Busctl::new(bus.address());
    // max_concurrent_jobs
    let max = b
        .get_property(MANAGER_PATH, MANAGER_IFACE, "MaxConcurrentJobs")
        .unwrap();
    assert_eq!(max.as_u64(), Some(10));
    // default_buffer_size (64KB: 64000 bytes, rounded up to whole pages) and
    // io_queue_depth make the io_uring ring.
    let h = health(&b);
    assert_eq!(h["IoUringQueueDepth"]["data"], 128, "{h}");
    assert_eq!(h["IoUringBufferBytes"]["data"], 65536, "{h}");
    // checkpoint_dir: where the checkpoints go.
    assert_eq!(
        h["CheckpointDir"]["data"],
        checkpoints.display().to_string()
    );
    let source = dir.path().join("a.txt");
    std::fs::write(
        &source,
        b"allowed: allowed_extensions = [] lets any through",
    )
    .unwrap();
    let job = b.copy(&[&source], &dir.path().join("b.txt"), &[]);
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(20)), "completed");
    let names: Vec<_> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.is_empty(),
        "no checkpoint in {}",
        checkpoints.display()
    );
    // blocked_extensions, written with the dot.
    let exe = dir.path().join("tool.exe");
    std::fs::write(&exe, b"MZ").unwrap();
    let err = refused(&b, &exe, &dir.path().join("copy.exe"));
    assert!(err.contains("blocked_extensions"), "{err}");
    // max_file_size: 100GB, exceeded by a sparse file of 100 GB and a byte.
    let huge = dir.path().join("huge.img");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(100_000_000_001)
        .unwrap();
    let err = refused(&b, &huge, &dir.path().join("huge.copy"));
    assert!(err.contains("max_file_size"), "{err}");
    // max_path_length: a destination of 4100 bytes.
    let long = dir.path().join("d/".repeat(2050));
    let err = refused(&b, &source, &long);
    assert!(err.contains("max_path_length"), "{err}");
    // system_paths with require_privilege_for_system.
    let err = refused(&b, Path::new("/proc/version"), &dir.path().join("v"));
    assert!(
        err.contains("system_paths") || err.contains("privileged"),
        "{err}"
    );
    // enable_metrics and metrics_port.
    assert!(scrape(port).contains("copyd_build_info"));
    // socket_path: accepted, said once that it is unused.
    let log = daemon.log_text();
    assert_eq!(log.matches("socket_path is ignored").count(), 1, "{log}");
    // log_level is shown by log_level_and_rust_log_both_set_the_level.
    drop(daemon);

    // enable_io_uring = false: the engine is gone, and health says why.
    let port = free_port();
    let _daemon = Daemon::start_with_config(&bus, Some(&operators_file(&checkpoints, port, false)));
    let engines = b
        .get_property(MANAGER_PATH, MANAGER_IFACE, "Engines")
        .unwrap();
    assert!(
        !engines.as_array().unwrap().iter().any(|e| e == "io_uring"),
        "{engines}"
    );
    let h = health(&b);
    let why = h["EnginesUnavailable"]["data"]["io_uring"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("enable_io_uring = false"), "{h}");
}

#[test]
fn a_broken_config_names_the_file_the_line_and_the_key() {
    let dir = copyd_tests::scratch_dir("badconf");
    let cases = [
        (
            "[daemon]\nmax_concurrent_jobs = 0\n",
            ":2: daemon.max_concurrent_jobs: must be at least 1 (0 would run no job ever)",
        ),
        (
            "[security]\nmax_path_length = 4096\nmax_file_size = \"lots\"\n",
            ":3: security.max_file_size: \"lots\" is not a size",
        ),
        (
            "[monitoring]\nenable_metrics = true\nmetrics_prot = 9090\n",
            ":3: monitoring.metrics_prot: unknown field `metrics_prot`",
        ),
        (
            "[performance]\nenable_io_uring = \"yes\"\n",
            ":2: performance.enable_io_uring: invalid type: string \"yes\", expected a boolean",
        ),
    ];
    for (text, expected) in cases {
        let file = dir.path().join("config.toml");
        std::fs::write(&file, text).unwrap();
        let expected = format!("copyd: {}{expected}", file.display());
        // --check-config, and a real start, say the same and stop.
        for check in [true, false] {
            let mut command = Command::new(bins::copyd());
            if check {
                command.arg("--check-config");
            }
            let out = run(command
                .arg("--address")
                .arg("unix:path=/nonexistent")
                .arg("--config")
                .arg(&file));
            assert_eq!(out.code, Some(2), "{out}");
            let first = out
                .stderr_str()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            assert!(first.starts_with(&expected), "{first}\nwanted: {expected}");
        }
    }
}

#[test]
fn log_level_and_rust_log_both_set_the_level() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("loglevel");
    // `between` runs while copyd is up, with its config file's path.
    let start_and = |level: &str, rust_log: Option<&str>, between: &dyn Fn(&Path, u32)| -> String {
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            format!(
                "state_dir = {}\n[monitoring]\nlog_level = \"{level}\"\n",
                quoted(&dir.path().join("state"))
            ),
        )
        .unwrap();
        let mut command = Command::new(bins::copyd());
        command
            .arg("--address")
            .arg(bus.address())
            .arg("--config")
            .arg(&file)
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .env("COPYD_LOG", "stderr")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let child = command.spawn().unwrap();
        wait_until(Duration::from_secs(10), "copyd on the bus", || {
            copyd_tests::daemon::name_has_owner(bus.address(), copyd_tests::BUS_NAME)
        });
        between(&file, child.id());
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let start = |level: &str, rust_log: Option<&str>| start_and(level, rust_log, &|_, _| {});
    let info = start("info", None);
    assert!(info.contains("copyd is serving"), "{info}");
    let warn = start("warn", None);
    assert!(!warn.contains("copyd is serving"), "{warn}");
    // RUST_LOG wins over log_level.
    let overridden = start("warn", Some("info"));
    assert!(overridden.contains("copyd is serving"), "{overridden}");
    // A reload changes the level: at warn, "configuration reloaded" (info)
    // is not logged; after the file says info and SIGHUP, it is.
    let hup = |pid: u32| {
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    };
    let reloaded = start_and("warn", None, &|file, pid| {
        hup(pid);
        let text = std::fs::read_to_string(file).unwrap();
        std::fs::write(file, text.replace("\"warn\"", "\"info\"")).unwrap();
        hup(pid);
    });
    assert_eq!(
        reloaded.matches("configuration reloaded").count(),
        1,
        "{reloaded}"
    );
}

#[test]
fn copyctl_status_perf_and_alerts_in_human_and_json_form() {
    let env = copyd_tests::TestEnv::start();
    let source = env.path("src.bin");
    make_big_file(&source, 3_000_000, 7);
    let dest = env.path("dest.bin");
    let out = env.copyctl(&[
        "--json",
        "copy",
        source.to_str().unwrap(),
        dest.to_str().unwrap(),
    ]);
    out.assert_success();
    let job: serde_json::Value = out.json();
    let id = job["id"].as_str().unwrap().to_owned();

    // status with no job: the service's health.
    let out = env.copyctl(&["status"]);
    out.assert_success();
    let text = out.stdout_str();
    println!("$ copyctl status\n{text}");
    for part in [
        "copyd 0.1.0, up",
        "engines:",
        "jobs:",
        "checkpoints:",
        "errors:",
        "alerts:       0",
    ] {
        assert!(text.contains(part), "no {part:?} in:\n{text}");
    }
    let out = env.copyctl(&["--json", "status"]);
    out.assert_success();
    let health: serde_json::Value = out.json();
    println!("$ copyctl --json status\n{health}");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["engines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "standard"));
    assert_eq!(health["checkpoint_dir_writable"], true, "{health}");
    assert_eq!(health["jobs_active"], 0, "{health}");
    assert_eq!(health["alerts"], serde_json::json!([]));

    // status --verbose JOB: per pair of file systems, the engines that
    // moved the bytes and why (the daemon's own record: Routes).
    let out = env.copyctl(&["status", "--verbose", &id]);
    out.assert_success();
    let text = out.stdout_str();
    println!("$ copyctl status --verbose {id}\n{text}");
    assert!(text.contains(" -> ") && text.contains(": 1 file"), "{text}");
    assert!(text.contains("    why: "), "{text}");
    let out = env.copyctl(&["--json", "status", "--verbose", &id]);
    out.assert_success();
    let verbose: serde_json::Value = out.json();
    assert_eq!(verbose["id"], id.as_str());
    let route = &verbose["engine_choices"]["routes"][0];
    let moved: u64 = route["engine_bytes"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(moved, 3_000_000, "{verbose}");
    assert_eq!(route["files"], 1, "{verbose}");
    // Source and copy are on one file system here.
    assert_eq!(route["source"], route["destination"], "{verbose}");
    assert!(!route["why"].as_array().unwrap().is_empty(), "{verbose}");

    // perf: the job is in it, per engine and among the recent.
    let out = env.copyctl(&["--json", "perf"]);
    out.assert_success();
    let perf: serde_json::Value = out.json();
    println!("$ copyctl --json perf\n{perf}");
    assert_eq!(perf["bytes"], 3_000_000, "{perf}");
    assert_eq!(perf["files"], 1, "{perf}");
    assert_eq!(perf["slowest_recent_jobs"][0]["id"], id.as_str(), "{perf}");
    assert_eq!(perf["queue_wait_seconds"]["samples"], 1, "{perf}");
    let engine = perf["slowest_recent_jobs"][0]["main_engine"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(perf["engines"][&engine]["bytes"], 3_000_000, "{perf}");
    let out = env.copyctl(&["perf"]);
    out.assert_success();
    let text = out.stdout_str();
    println!("$ copyctl perf\n{text}");
    assert!(text.contains("ENGINE") && text.contains(&engine), "{text}");
    assert!(text.contains("copy completed 1"), "{text}");

    // alerts: none here (a_stalled_job_raises_an_alert_that_then_clears
    // shows one).
    let out = env.copyctl(&["alerts"]);
    out.assert_success();
    assert_eq!(out.stdout_str().trim(), "no alerts");
    let out = env.copyctl(&["--json", "alerts"]);
    out.assert_success();
    assert_eq!(out.json(), serde_json::json!([]));
}

/// An ext4 file system on a loop device, which `fsfreeze` can freeze: a
/// real stall, every write into it blocks until it is thawed. Needs root.
struct Frozen {
    mount: std::path::PathBuf,
    device: String,
    frozen: bool,
}

impl Frozen {
    fn make(dir: &Path) -> Option<Frozen> {
        let image = dir.join("ext4.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
        let out = run(Command::new("losetup").args(["-f", "--show"]).arg(&image));
        if !out.success() {
            eprintln!("skipped: no loop device ({out})");
            return None;
        }
        let device = out.stdout_str().trim().to_owned();
        run(Command::new("mkfs.ext4").args(["-q", &device])).assert_success();
        let mount = dir.join("mnt");
        std::fs::create_dir(&mount).unwrap();
        run(Command::new("mount").arg(&device).arg(&mount)).assert_success();
        Some(Frozen {
            mount,
            device,
            frozen: false,
        })
    }

    fn freeze(&mut self, on: bool) {
        run(Command::new("fsfreeze")
            .arg(if on { "-f" } else { "-u" })
            .arg(&self.mount))
        .assert_success();
        self.frozen = on;
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Thawed first: a process blocked on a frozen file system cannot
        // even be killed.
        if self.frozen {
            let _ = Command::new("fsfreeze").arg("-u").arg(&self.mount).status();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

fn alerts(b: &Busctl) -> Vec<String> {
    b.get_property(MANAGER_PATH, MANAGER_IFACE, "Alerts")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a[0].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_stalled_job_raises_an_alert_that_then_clears() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("stall");
    let config = format!(
        "state_dir = {}\njob_retention_seconds = 600\n[monitoring]\nstall_seconds = 2\n",
        quoted(&dir.path().join("state"))
    );
    let daemon = Daemon::start_with_config(&bus, Some(&config));
    let Some(mut fs) = Frozen::make(dir.path()) else {
        return;
    };
    let b = Busctl::new(bus.address());
    let source = dir.path().join("big");
    make_big_file(&source, 40_000_000, 3);
    // 4 MB/s: ten seconds of copying, limited but far from held back.
    let job = b.copy(
        &[&source],
        &fs.mount.join("big"),
        &["rate-limit", "t", "4000000"],
    );
    b.wait_job_state(&job, Duration::from_secs(10), |s| s == "running");
    wait_until(Duration::from_secs(10), "bytes copied", || {
        b.job_u64(&job, "BytesDone") > 0
    });
    let id = b.job_prop(&job, "Id").as_str().unwrap().to_owned();
    let stalled = format!("job-stalled:{id}");
    assert!(!alerts(&b).contains(&stalled));

    fs.freeze(true);
    wait_until(Duration::from_secs(15), "the stall alert", || {
        alerts(&b).contains(&stalled)
    });
    assert_eq!(b.job_state(&job), "running");
    let env_alerts = copyd_tests::cmd::copyctl(bus.address(), &["alerts"]);
    env_alerts.assert_success();
    println!("$ copyctl alerts (frozen)\n{}", env_alerts.stdout_str());
    assert!(env_alerts.stdout_str().contains(&stalled));
    assert!(env_alerts.stdout_str().contains("no progress"));

    fs.freeze(false);
    wait_until(Duration::from_secs(15), "the alert to clear", || {
        !alerts(&b).contains(&stalled)
    });
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(60)), "completed");
    let log = daemon.log_text();
    assert!(
        log.contains("alert raised") && log.contains("alert cleared"),
        "{log}"
    );
    drop(fs);
}

#[test]
fn sighup_and_reload_change_limits_rules_and_level_while_jobs_keep_going() {
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("reload");
    let state = dir.path().join("state");
    let write_config = |daemon: &Daemon, text: &str| {
        let file = daemon.state_dir().parent().unwrap().join("copyd.toml");
        std::fs::write(file, text).unwrap();
    };
    let config = |jobs: u32, blocked: &str| {
        format!(
            "[daemon]\ncheckpoint_dir = {}\njob_retention_seconds = 600\nmax_concurrent_jobs = {jobs}\n[security]\nblocked_extensions = [{blocked}]\n",
            quoted(&state)
        )
    };
    let daemon = Daemon::start_with_config(&bus, Some(&config(1, "")));
    let b = Busctl::new(bus.address());
    let max = || {
        b.get_property(MANAGER_PATH, MANAGER_IFACE, "MaxConcurrentJobs")
            .unwrap()
            .as_u64()
            .unwrap()
    };
    assert_eq!(max(), 1);
    let source = dir.path().join("big.txt");
    make_big_file(&source, 20_000_000, 5);
    // Running through the reloads: 4 MB/s, five seconds.
    let job = b.copy(
        &[&source],
        &dir.path().join("copy.txt"),
        &["rate-limit", "t", "4000000"],
    );
    b.wait_job_state(&job, Duration::from_secs(10), |s| s == "running");

    // SIGHUP: a higher job limit and a new rule.
    write_config(&daemon, &config(3, "\".txt\""));
    let pid = rustix::process::Pid::from_raw(daemon.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    wait_until(Duration::from_secs(5), "the new job limit", || max() == 3);
    let err = refused(&b, &source, &dir.path().join("other.txt"));
    assert!(err.contains("blocked_extensions"), "{err}");
    assert_eq!(b.job_state(&job), "running");

    // Reload on the bus: a broken file is refused with file:line: key, and
    // nothing changes.
    write_config(&daemon, "[daemon]\nmax_concurrent_jobs = 0\n");
    let out = b.call(MANAGER_PATH, MANAGER_IFACE, "Reload", "", &[]);
    assert!(!out.success());
    let text = out.stderr_str();
    assert!(
        text.contains("copyd.toml:2: daemon.max_concurrent_jobs: must be at least 1"),
        "{text}"
    );
    assert_eq!(max(), 3);
    // A good one: the rule is gone again, and a key that needs a restart
    // is named.
    let mut text = config(2, "");
    text.push_str("[performance]\nio_queue_depth = 64\n");
    write_config(&daemon, &text);
    let reply = b.call_json(MANAGER_PATH, MANAGER_IFACE, "Reload", "", &[]);
    assert_eq!(
        reply["data"][0],
        serde_json::json!(["[performance]/[engine]"])
    );
    assert_eq!(max(), 2);
    let other = b.copy(
        &[&dir.path().join("big.txt")],
        &dir.path().join("again.txt"),
        &[],
    );
    assert_eq!(b.wait_job_end(&other, Duration::from_secs(30)), "completed");
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(30)), "completed");
    let log = daemon.log_text();
    assert!(log.contains("configuration reloaded"), "{log}");
}

/// The script run in a private mount namespace: a tmpfs over /run/systemd
/// and /run/log, a real systemd-journald on them, copyd logging to it (its
/// stderr a file, not a terminal: the journal socket decides), and the
/// journal read back as JSON when the test says stop.
const JOURNAL_SCRIPT: &str = r#"set -e
mkdir -p /run/systemd /run/log
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
mkdir -p /run/log/journal
/lib/systemd/systemd-journald &
journald=$!
for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
[ -S /run/systemd/journal/socket ] || { echo "journald did not start" >&2; exit 3; }
env -u JOURNAL_STREAM -u COPYD_LOG RUST_LOG=info "$COPYD" --address "$ADDRESS" --config "$DIR/config.toml" 2>"$DIR/stderr" </dev/null &
copyd=$!
while [ ! -e "$DIR/stop" ]; do sleep 0.05; done
kill -TERM $copyd; wait $copyd || true
journalctl --sync 2>/dev/null || sleep 0.5
journalctl -D /run/log/journal -o json --no-pager SYSLOG_IDENTIFIER=copyd > "$DIR/journal.json"
kill $journald; wait $journald || true
"#;

#[test]
fn logs_go_to_a_real_journald_with_the_documented_fields() {
    let journald = Path::new("/lib/systemd/systemd-journald");
    if !journald.exists() || !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root and {}", journald.display());
        return;
    }
    let bus = TestBus::start(Policy::Permissive);
    let dir = copyd_tests::scratch_dir("journal");
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "state_dir = {}\njob_retention_seconds = 600\n",
            quoted(&dir.path().join("state"))
        ),
    )
    .unwrap();
    let script = dir.path().join("journal.sh");
    std::fs::write(&script, JOURNAL_SCRIPT).unwrap();
    let mut namespace = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash"])
        .arg(&script)
        .env("COPYD", bins::copyd())
        .env("ADDRESS", bus.address())
        .env("DIR", dir.path())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(15), "copyd on the bus", || {
        copyd_tests::daemon::name_has_owner(bus.address(), copyd_tests::BUS_NAME)
    });
    let b = Busctl::new(bus.address());
    let source = dir.path().join("logged");
    std::fs::write(&source, b"to the journal").unwrap();
    let job = b.copy(&[&source], &dir.path().join("logged.copy"), &[]);
    assert_eq!(b.wait_job_end(&job, Duration::from_secs(20)), "completed");
    let id = b.job_prop(&job, "Id").as_str().unwrap().to_owned();
    std::fs::write(dir.path().join("stop"), b"").unwrap();
    let status = namespace.wait().unwrap();
    assert!(status.success(), "the journal script failed: {status}");

    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(
        !stderr.contains("copyd is serving"),
        "logged to stderr:\n{stderr}"
    );
    let entries: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("journal.json"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let message = |e: &serde_json::Value| e["MESSAGE"].as_str().unwrap_or_default().to_owned();
    let serving = entries
        .iter()
        .find(|e| message(e) == "copyd is serving")
        .unwrap_or_else(|| panic!("no start line in {entries:?}"));
    // Plain text, not Rust's Debug form (was Some(OwnedUniqueName(":1.2"))).
    assert!(
        serving["UNIQUE_NAME"].as_str().unwrap().starts_with(":1."),
        "{serving}"
    );
    // No tracing-journald F_ prefix anywhere.
    for e in &entries {
        let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
        assert!(!keys.iter().any(|k| k.starts_with("F_")), "{keys:?}");
    }
    // Audit events carry the fields docs/SECURITY.md names.
    let audit = entries
        .iter()
        .find(|e| e["AUDIT_KIND"] == "authorization")
        .unwrap_or_else(|| panic!("no audit entry in {entries:?}"));
    for field in ["UID", "ACTION", "RESULT", "TARGET"] {
        assert!(audit.get(field).is_some(), "no {field} in {audit}");
    }
    // The job's lines carry its id.
    let completed = entries
        .iter()
        .find(|e| message(e) == "job completed")
        .unwrap_or_else(|| panic!("no job line in {entries:?}"));
    assert_eq!(completed["JOB"], id.as_str(), "{completed}");
    println!(
        "{} journal entries from copyd; e.g. {}",
        entries.len(),
        serde_json::to_string(completed).unwrap()
    );
}

/// systemd-analyze's exposure score of a unit file.
fn exposure(unit: &Path) -> f64 {
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit));
    out.assert_success();
    let text = out.stdout_str() + &out.stderr_str();
    text.lines()
        .find_map(|line| {
            line.split("Overall exposure level for copyd.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"))
}

#[test]
fn the_metrics_drop_in_opens_loopback_only_and_the_unit_stays_closed_without_it() {
    if run(Command::new("systemd-analyze").arg("--version")).code != Some(0) {
        eprintln!("skipped: no systemd-analyze");
        return;
    }
    let root = copyd_tests::repo_root();
    let unit = std::fs::read_to_string(root.join("systemd/copyd.service"))
        .unwrap()
        .replace(
            "/usr/libexec/copyd/copyd",
            &bins::copyd().display().to_string(),
        );
    let drop_in = std::fs::read_to_string(root.join("systemd/copyd-metrics.conf")).unwrap();
    let dir = copyd_tests::scratch_dir("unit-metrics");
    let closed = dir.path().join("closed/copyd.service");
    let open = dir.path().join("open/copyd.service");
    for (path, text) in [
        (&closed, unit.clone()),
        (&open, format!("{unit}\n{drop_in}")),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        let out = run(Command::new("systemd-analyze").arg("verify").arg(path));
        out.assert_success();
        assert!(out.stderr_str().trim().is_empty(), "{}", out.stderr_str());
    }
    // A drop-in's later assignments win, as they do here appended.
    assert!(drop_in.contains("PrivateNetwork=no") && drop_in.contains("IPAddressAllow=localhost"));
    let (off, on) = (exposure(&closed), exposure(&open));
    println!("exposure: {off} without the metrics drop-in, {on} with it");
    assert!(off <= 2.5, "{off}");
    assert!(on <= 3.0, "{on}");
}

/// copyctl with a config home of its own and no COPYD_ADDRESS: what it
/// reaches, it reaches through its configuration.
fn copyctl_with_config(home: &Path, args: &[&str]) -> copyd_tests::CmdOutput {
    run(Command::new(bins::copyctl())
        .env_remove("COPYD_ADDRESS")
        .env_remove("NO_COLOR")
        .env("XDG_CONFIG_HOME", home)
        .args(args))
}

/// Runs `command` on a pseudo-terminal (util-linux script), where the
/// progress bar draws; what it wrote there.
fn on_a_terminal(home: &Path, command: &str) -> String {
    let out = run(Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env_remove("COPYD_ADDRESS")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .env("XDG_CONFIG_HOME", home));
    out.assert_success();
    out.stdout_str()
}

#[test]
fn copyctl_reads_its_own_config_and_every_key_takes_effect() {
    let bus = TestBus::start(Policy::Permissive);
    let daemon = Daemon::start(&bus);
    let home = copyd_tests::scratch_dir("xdg");
    let file = home.path().join("copyctl/config.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let write = |display: &str| {
        std::fs::write(
            &file,
            format!(
                "[client]\nsocket_path = \"/run/copyd.sock\"\naddress = \"{}\"\ndefault_verify_method = \"size\"\nshow_progress = true\n[display]\n{display}",
                bus.address()
            ),
        )
        .unwrap();
    };
    write("progress_update_interval = \"500ms\"\nuse_color = true\n");

    // address: the test's copyd, not a private one (its checkpoints are
    // this daemon's).
    let out = copyctl_with_config(home.path(), &["--json", "status"]);
    out.assert_success();
    assert_eq!(
        out.json()["checkpoint_dir"],
        daemon.state_dir().display().to_string()
    );
    // socket_path: said once with -v, not without.
    assert!(out.stderr_str().is_empty(), "{}", out.stderr_str());
    let out = copyctl_with_config(home.path(), &["-v", "alerts"]);
    out.assert_success();
    assert_eq!(
        out.stderr_str().matches("socket_path").count(),
        1,
        "{}",
        out.stderr_str()
    );
    // default_verify_method takes effect: a copy without --verify checks
    // its copy by the method the file names.
    let (source, copy) = (
        home.path().join("verify-src"),
        home.path().join("verify-copy"),
    );
    std::fs::write(&source, b"verified by size").unwrap();
    let out = copyctl_with_config(
        home.path(),
        &[
            "--json",
            "copy",
            source.to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
    );
    out.assert_success();
    assert_eq!(
        out.stdout_str()
            .lines()
            .last()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["verify"].clone()),
        Some(serde_json::json!("size"))
    );
    // --config names another file.
    let other = home.path().join("other.toml");
    std::fs::write(
        &other,
        "[client]\naddress = \"unix:path=/nonexistent/bus\"\n",
    )
    .unwrap();
    let out = copyctl_with_config(
        home.path(),
        &["--config", other.to_str().unwrap(), "alerts"],
    );
    assert!(!out.success());
    assert!(
        out.stderr_str().contains("/nonexistent/bus"),
        "{}",
        out.stderr_str()
    );

    // show_progress, use_color, progress_update_interval: on a terminal.
    let dir = copyd_tests::scratch_dir("bar");
    let source = dir.path().join("src");
    make_big_file(&source, 3_000_000, 9);
    let copy = |name: &str| {
        format!(
            "{} copy --rate-limit 1MB/s {} {}",
            bins::copyctl().display(),
            source.display(),
            dir.path().join(name).display()
        )
    };
    let coloured = on_a_terminal(home.path(), &copy("a"));
    assert!(coloured.contains("/2.86 MiB"), "no bar: {coloured:?}");
    assert!(coloured.contains("\x1b[36m"), "no colour: {coloured:?}");
    write("progress_update_interval = \"2s\"\nuse_color = false\n");
    let plain = on_a_terminal(home.path(), &copy("b"));
    assert!(plain.contains("/2.86 MiB"), "no bar: {plain:?}");
    assert!(!plain.contains("\x1b[36m"), "colour: {plain:?}");
    // Fewer redraws at one per 2 s than at one per 500 ms, over 3 s.
    let draws = |text: &str| text.matches("/2.86 MiB").count();
    assert!(
        draws(&plain) < draws(&coloured),
        "{} vs {}",
        draws(&plain),
        draws(&coloured)
    );
    // show_progress = false: no bar.
    std::fs::write(
        &file,
        format!(
            "[client]\naddress = \"{}\"\nshow_progress = false\n",
            bus.address()
        ),
    )
    .unwrap();
    let none = on_a_terminal(home.path(), &copy("c"));
    assert!(!none.contains("/2.86 MiB"), "a bar: {none:?}");

    // A broken file: one error naming the file, the line and the key.
    std::fs::write(
        &file,
        "[client]\nshow_progress = true\n[display]\nuse_colour = true\n",
    )
    .unwrap();
    let out = copyctl_with_config(home.path(), &["alerts"]);
    assert_eq!(out.code, Some(2));
    assert_eq!(
        out.stderr_str().lines().next().unwrap(),
        format!(
            "copyctl: {}:4: display.use_colour: unknown field `use_colour`, expected `progress_update_interval` or `use_color`",
            file.display()
        )
    );
}
