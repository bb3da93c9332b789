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
    let start = |level: &str, rust_log: Option<&str>| -> String {
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
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let mut child = command.spawn().unwrap();
        wait_until(Duration::from_secs(10), "copyd on the bus", || {
            copyd_tests::daemon::name_has_owner(bus.address(), copyd_tests::BUS_NAME)
        });
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let info = start("info", None);
    assert!(info.contains("copyd is serving"), "{info}");
    let warn = start("warn", None);
    assert!(!warn.contains("copyd is serving"), "{warn}");
    // RUST_LOG wins over log_level.
    let overridden = start("warn", Some("info"));
    assert!(overridden.contains("copyd is serving"), "{overridden}");
}
