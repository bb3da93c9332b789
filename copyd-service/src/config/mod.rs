//! The daemon's configuration: `/etc/copyd/config.toml` for the system
//! service, or the file given with `--config`. Every key is optional.
//!
//! The file has the tables `[daemon]`, `[performance]`, `[security]`,
//! `[monitoring]` (the layout operators were given) and `[engine]`; the
//! `[daemon]` keys are also accepted at the top level, where copyd read them
//! first. [`Config`] is what the rest of copyd sees; [`file`] is the file's
//! shape, read strictly: an unknown key, a wrong type or an impossible value
//! is a [`ConfigError`] naming the file, the line and the key.

use std::path::{Path, PathBuf};

use copyd_engine::engines::IoUringConfig;

mod file;

pub use file::{find_key, parse_strict, ConfigError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Limits and path rules for every request: the [security] table.
    pub security: SecurityConfig,
    /// Where audit events are appended as JSON lines, besides the log
    /// (target copyd::audit). None: the log only.
    pub audit_log: Option<PathBuf>,
    /// Jobs running at once; the rest wait in state "queued".
    pub max_concurrent_jobs: u32,
    /// How long a finished job stays on the bus before it is removed.
    pub job_retention_seconds: u64,
    /// How many finished jobs stay on the bus at most: beyond that, the
    /// oldest finished are removed before their retention time is up (each
    /// job costs memory while it is listed). 0: none stay.
    pub job_retention_count: u64,
    /// Where checkpoints and job state live (default: /var/lib/copyd for the
    /// system service, $XDG_STATE_HOME/copyd otherwise).
    pub state_dir: Option<PathBuf>,
    /// Global limit in bytes per second over all jobs; 0 for none.
    pub rate_limit: u64,
    /// Resume interrupted jobs on start.
    pub auto_resume: bool,
    /// Run one job at a time per physical disk (jobs on different disks
    /// still run side by side): concurrent copies on one disk mostly make
    /// each other seek.
    pub serialize_per_disk: bool,
    /// Run jobs even when their checkpoints cannot be written (the state
    /// directory is not writable); they then cannot resume after a crash.
    pub run_without_checkpoints: bool,
    /// How jobs copy: the [engine] and [performance] tables.
    pub engine: EngineConfig,
    /// Metrics, log level and alert thresholds: the [monitoring] table.
    pub monitoring: MonitoringConfig,
    /// `[daemon] socket_path`, accepted from the layout operators were
    /// given but unused: copyd serves on D-Bus, not on a socket of its own.
    pub socket_path: Option<String>,
    /// The file given with --config, read again on reload; None: the
    /// default location (SYSTEM_CONFIG, if present).
    pub file: Option<PathBuf>,
    /// state_dir came from copyd's --state-dir, not the file: a reload
    /// keeps it without calling it a change.
    pub state_dir_from_command_line: bool,
}

/// The [monitoring] table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoringConfig {
    /// Serve Prometheus metrics on `metrics_address:metrics_port/metrics`.
    /// Off: nothing listens.
    pub enable_metrics: bool,
    pub metrics_port: u16,
    /// Loopback unless configured otherwise: the metrics are not secret
    /// but name no one who may read them.
    pub metrics_address: std::net::IpAddr,
    /// The log filter (a level, or an EnvFilter directive such as
    /// `copyd=debug`) when RUST_LOG is not set.
    pub log_level: String,
    /// Alert: a running job whose counts have not moved for this long.
    pub stall_seconds: u64,
    /// Alert: failed jobs and files per minute, over 5 minutes, above this.
    pub error_rate_per_minute: u32,
    /// Alert: a file system a job writes to is fuller than this.
    pub disk_full_percent: u8,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enable_metrics: false,
            metrics_port: 9090,
            metrics_address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            log_level: "info".into(),
            stall_seconds: 60,
            error_rate_per_minute: 10,
            disk_full_percent: 95,
        }
    }
}

/// The copy engine's knobs, the same for every job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Threads copying one job's tree (and streams reading one large
    /// uncached file, at most 4); 0: one per CPU copyd may use.
    pub workers: usize,
    /// io_uring: reads and writes in flight at once per ring.
    pub io_uring_queue_depth: u32,
    /// io_uring: all registered buffers of one ring together, in KiB.
    /// More than RLIMIT_MEMLOCK allows (8 MiB for unprivileged processes)
    /// makes the io_uring engine unusable.
    pub io_uring_buffer_kib: usize,
    /// Offer the io_uring engine at all (`[performance] enable_io_uring`).
    pub enable_io_uring: bool,
    /// How transient errors are retried (`retry_attempts`,
    /// `retry_backoff`).
    pub retry: copyd_engine::retry::RetryPolicy,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let io_uring = IoUringConfig::default();
        EngineConfig {
            workers: 0,
            io_uring_queue_depth: io_uring.queue_depth,
            io_uring_buffer_kib: io_uring.buffer_bytes >> 10,
            enable_io_uring: true,
            retry: copyd_engine::retry::RetryPolicy::default(),
        }
    }
}

impl EngineConfig {
    pub fn io_uring(&self) -> IoUringConfig {
        IoUringConfig {
            queue_depth: self.io_uring_queue_depth,
            buffer_bytes: self.io_uring_buffer_kib << 10,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            security: SecurityConfig::default(),
            audit_log: None,
            max_concurrent_jobs: std::thread::available_parallelism()
                .map_or(2, |n| n.get() as u32)
                .max(1),
            job_retention_seconds: 300,
            job_retention_count: 1000,
            state_dir: None,
            rate_limit: 0,
            auto_resume: true,
            serialize_per_disk: true,
            run_without_checkpoints: false,
            engine: EngineConfig::default(),
            monitoring: MonitoringConfig::default(),
            socket_path: None,
            file: None,
            state_dir_from_command_line: false,
        }
    }
}

/// Where the system service reads its configuration.
pub const SYSTEM_CONFIG: &str = "/etc/copyd/config.toml";

impl Config {
    /// The state directory: the configured one, else /var/lib/copyd for
    /// root, else $XDG_STATE_HOME/copyd (~/.local/state/copyd).
    pub fn state_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.state_dir {
            return Some(dir.clone());
        }
        if rustix::process::geteuid().is_root() {
            return Some(PathBuf::from("/var/lib/copyd"));
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state"))
            })?;
        Some(base.join("copyd"))
    }

    /// Reads `path`. A missing file at the default location means defaults;
    /// a missing file that was asked for by name is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(path) => (path, true),
            None => (Path::new(SYSTEM_CONFIG), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default())
            }
            Err(err) => return Err(ConfigError::unreadable(path, &err)),
        };
        let mut config = file::parse(path, &text)?;
        config.file = required.then(|| path.to_owned());
        Ok(config)
    }
}

/// The [security] table: rules applied to every request, on top of the
/// caller's own rights (which the kernel enforces). Each refusal is a
/// PolicyRefused error naming the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// Largest single file copied, in bytes; 0 for no limit.
    pub max_file_size: u64,
    /// Longest path (source, destination, or any file's target) in bytes;
    /// 0 (the default) for no limit beyond the kernel's own PATH_MAX. A
    /// limit makes every job walk its sources once more before it starts.
    pub max_path_length: u64,
    /// If not empty, only files with one of these extensions
    /// (case-insensitive; kept without the dot, written with or without it)
    /// may be copied.
    pub allowed_extensions: Vec<String>,
    /// Files with these extensions (without the dot, case-insensitive) are
    /// refused.
    pub blocked_extensions: Vec<String>,
    /// System locations: see require_privilege_for_system.
    pub system_paths: Vec<PathBuf>,
    /// If true, a request reading from or writing into a system_paths
    /// location must be a privileged job (option privileged, polkit action
    /// org.example.copyd1.copy-privileged). If false, those paths are
    /// treated like any other.
    pub require_privilege_for_system: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            max_file_size: 0,
            max_path_length: 0,
            allowed_extensions: Vec::new(),
            blocked_extensions: Vec::new(),
            system_paths: ["/proc", "/sys", "/dev"].map(PathBuf::from).to_vec(),
            require_privilege_for_system: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        file::parse(Path::new("/etc/copyd/config.toml"), text)
    }

    /// The file operators were given, exactly as written.
    pub(crate) const OPERATORS_FILE: &str = r#"[daemon]
socket_path = "/run/copyd.sock"
max_concurrent_jobs = 10
checkpoint_dir = "/var/lib/copyd/checkpoints"
[performance]
default_buffer_size = "64KB"
io_queue_depth = 128
enable_io_uring = true
[security]
max_file_size = "100GB"
max_path_length = 4096
allowed_extensions = []
blocked_extensions = [".exe", ".bat", ".cmd"]
system_paths = ["/proc", "/sys", "/dev"]
require_privilege_for_system = true
[monitoring]
enable_metrics = true
metrics_port = 9090
log_level = "info"
"#;

    #[test]
    fn the_operators_file_is_read_as_written() {
        let config = load(OPERATORS_FILE).unwrap();
        assert_eq!(config.socket_path.as_deref(), Some("/run/copyd.sock"));
        assert_eq!(config.max_concurrent_jobs, 10);
        assert_eq!(
            config.state_dir,
            Some(PathBuf::from("/var/lib/copyd/checkpoints"))
        );
        // 64KB is 64000 bytes, rounded up to whole pages (65536), one per
        // operation in flight.
        assert_eq!(config.engine.io_uring_queue_depth, 128);
        assert_eq!(config.engine.io_uring().buffer_bytes, 65536 * 128);
        assert!(config.engine.enable_io_uring);
        assert_eq!(config.security.max_file_size, 100_000_000_000);
        assert_eq!(config.security.max_path_length, 4096);
        assert_eq!(config.security.blocked_extensions, ["exe", "bat", "cmd"]);
        assert!(config.security.allowed_extensions.is_empty());
        assert!(config.monitoring.enable_metrics);
        assert_eq!(config.monitoring.metrics_port, 9090);
        assert!(config.monitoring.metrics_address.is_loopback());
        assert_eq!(config.monitoring.log_level, "info");
    }

    #[test]
    fn sizes_take_every_spelling() {
        for (text, bytes) in [
            ("\"64KB\"", 64_000),
            ("\"64KiB\"", 65_536),
            ("\"100GB\"", 100_000_000_000),
            ("\"1.5GiB\"", 3 << 29),
            ("123", 123),
        ] {
            let config = load(&format!("[security]\nmax_file_size = {text}\n")).unwrap();
            assert_eq!(config.security.max_file_size, bytes, "{text}");
        }
        assert_eq!(
            load("rate_limit = \"10MiB\"\n").unwrap().rate_limit,
            10 << 20
        );
    }

    #[test]
    fn mistakes_name_the_file_the_line_and_the_key() {
        let err = load("[daemon]\nmax_concurrent_jobs = 2\nmax_concurent_jobs = 3\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert_eq!(err.key.as_deref(), Some("daemon.max_concurent_jobs"));
        assert!(
            err.to_string().starts_with(
                "/etc/copyd/config.toml:3: daemon.max_concurent_jobs: unknown field `max_concurent_jobs`"
            ),
            "{err}"
        );
        let err = load("# x\n[security]\nmax_file_size = true\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(3), Some("security.max_file_size")),
            "{err}"
        );
        let err = load("[security]\nmax_file_size = \"12XB\"\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(2), Some("security.max_file_size"))
        );
        assert!(err.message.contains("12XB"), "{err}");
        let err = load("[monitoring]\n\nmetrics_port = \"x\"\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(3), Some("monitoring.metrics_port"))
        );
        let err = load("[daemon]\nsocket_path = \"/x\"\n\nmax_concurrent_jobs = 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/copyd/config.toml:4: daemon.max_concurrent_jobs: must be at least 1 (0 would run no job ever)"
        );
        let err = load("max_concurrent_jobs = 0\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(1), Some("max_concurrent_jobs"))
        );
        let err = load("[performance]\nio_queue_depth = 0\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(2), Some("performance.io_queue_depth"))
        );
        let err = load("[monitoring]\nlog_level = \"loud\"\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(2), Some("monitoring.log_level"))
        );
        let err = load("[surveillance]\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(1), Some("surveillance")),
            "{err}"
        );
        let err = load("auto_resume = true\n[daemon]\nauto_resume = false\n").unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(3), Some("daemon.auto_resume"))
        );
    }

    #[test]
    fn the_older_layout_still_reads() {
        let config =
            load("max_concurrent_jobs = 3\njob_retention_seconds = 9\n[engine]\nworkers = 3\nio_uring_queue_depth = 8\n")
                .unwrap();
        assert_eq!(
            (config.max_concurrent_jobs, config.job_retention_seconds),
            (3, 9)
        );
        assert_eq!(config.job_retention_count, 1000);
        assert_eq!(
            (config.engine.workers, config.engine.io_uring().queue_depth),
            (3, 8)
        );
        assert_eq!(
            config.engine.io_uring().buffer_bytes,
            IoUringConfig::default().buffer_bytes
        );
        assert_eq!(
            Config::default().engine.io_uring(),
            IoUringConfig::default()
        );
        assert!(load("[engine]\nthreads = 3\n").is_err());
    }

    fn shipped() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config.toml"),
        )
        .unwrap()
    }

    /// packaging/config.toml with every `#[table]` and `#key = value` line
    /// uncommented.
    fn uncommented(shipped: &str) -> String {
        let is_name =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        let setting = |line: &str| match line.strip_prefix('#') {
            Some(table) if table.starts_with('[') && table.ends_with(']') => Some(table.to_owned()),
            Some(rest) => match rest.split_once(" = ") {
                Some((name, _)) if is_name(name) => Some(rest.to_owned()),
                _ => None,
            },
            None => None,
        };
        shipped
            .lines()
            .filter_map(setting)
            .map(|line| line + "\n")
            .collect()
    }

    #[test]
    fn the_shipped_config_with_every_key_set_is_read() {
        // packaging/config.toml shows every key commented out, with its
        // default or an example: uncommented, copyd must accept all. The
        // [engine] table repeats [performance]'s io_uring knobs under older
        // names (setting both is refused): it is read on its own.
        let all = uncommented(&shipped());
        let (main, engine) = all.split_once("[engine]\n").expect("an [engine] table");
        let (engine, rest) = engine
            .split_once("[security]\n")
            .expect("[security] after [engine]");
        let config = load(&format!("{main}[security]\n{rest}")).unwrap();
        assert_eq!(config.engine, EngineConfig::default());
        assert_eq!(config.security.blocked_extensions, ["exe", "bat", "cmd"]);
        let config = load(&format!("[engine]\n{engine}")).unwrap();
        assert_eq!(config.engine, EngineConfig::default());
    }

    /// The keys toml says a table takes, from the error an unknown key
    /// gets: the parser's own list, so this test needs no upkeep.
    fn keys_of(table: &str) -> Vec<String> {
        let text = if table.is_empty() {
            "zzz = 1\n".to_owned()
        } else {
            format!("[{table}]\nzzz = 1\n")
        };
        let message = load(&text).unwrap_err().message;
        let list = message.split("expected one of").nth(1).expect(&message);
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_shipped_config_documents_every_key() {
        let raw = shipped();
        let shipped = uncommented(&raw);
        let tables = [
            "",
            "daemon",
            "performance",
            "engine",
            "security",
            "monitoring",
        ];
        let mut missing = Vec::new();
        for table in tables {
            let keys = keys_of(table);
            assert!(keys.len() >= 3, "{table}: {keys:?}");
            for key in keys {
                if table.is_empty() && tables.contains(&key.as_str()) {
                    assert!(shipped.contains(&format!("[{key}]\n")), "no [{key}] table");
                    continue;
                }
                // A top-level key is documented under [daemon] (the same
                // keys); [daemon]'s own are found in that table.
                let in_table = if table.is_empty() { "daemon" } else { table };
                // state_dir is checkpoint_dir's older name, said in prose
                // (the two cannot both be set).
                let alias = key == "state_dir" && raw.contains("state_dir is the same key");
                if file::find_key(&shipped, in_table, &key).is_none() && !alias {
                    missing.push(format!("[{in_table}] {key}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "packaging/config.toml does not show: {missing:?}"
        );
    }
}
