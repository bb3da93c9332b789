//! The configuration file's shape and how it is read: strictly, every
//! mistake reported as `file:line: key: what is wrong`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, EngineConfig, MonitoringConfig, SecurityConfig};
use crate::units::{Millis, Size};

/// Why a configuration file was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; None when the file could not be read at all.
    pub line: Option<usize>,
    /// The key, with its table (`security.max_file_size`).
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn unreadable(file: &Path, err: &std::io::Error) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            line: None,
            key: None,
            message: format!("cannot read: {err}"),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The `[daemon]` keys read at the top level (the older layout).
struct DaemonKeys {
    audit_log: Option<PathBuf>,
    max_concurrent_jobs: Option<u32>,
    job_retention_seconds: Option<u64>,
    job_retention_count: Option<u64>,
    state_dir: Option<PathBuf>,
    rate_limit: Option<Size>,
    auto_resume: Option<bool>,
    serialize_per_disk: Option<bool>,
    run_without_checkpoints: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DaemonTable {
    socket_path: Option<String>,
    /// Where checkpoints live: the state directory.
    checkpoint_dir: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    max_concurrent_jobs: Option<u32>,
    job_retention_seconds: Option<u64>,
    job_retention_count: Option<u64>,
    state_dir: Option<PathBuf>,
    rate_limit: Option<Size>,
    auto_resume: Option<bool>,
    serialize_per_disk: Option<bool>,
    run_without_checkpoints: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct EngineTable {
    workers: Option<usize>,
    io_uring_queue_depth: Option<u32>,
    io_uring_buffer_kib: Option<usize>,
    retry_attempts: Option<u32>,
    retry_backoff: Option<Millis>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PerformanceTable {
    /// One io_uring operation's buffer.
    default_buffer_size: Option<Size>,
    /// io_uring operations in flight per ring.
    io_queue_depth: Option<u32>,
    enable_io_uring: Option<bool>,
    workers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SecurityTable {
    max_file_size: Option<Size>,
    max_path_length: Option<u64>,
    allowed_extensions: Option<Vec<String>>,
    blocked_extensions: Option<Vec<String>>,
    system_paths: Option<Vec<PathBuf>>,
    require_privilege_for_system: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MonitoringTable {
    enable_metrics: Option<bool>,
    metrics_port: Option<u16>,
    metrics_address: Option<String>,
    log_level: Option<String>,
    stall_seconds: Option<u64>,
    error_rate_per_minute: Option<u32>,
    disk_full_percent: Option<u8>,
}

/// The whole file. serde cannot deny unknown fields through `flatten`, so
/// the top-level `[daemon]` keys are spelled out again here.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TopLevel {
    audit_log: Option<PathBuf>,
    max_concurrent_jobs: Option<u32>,
    job_retention_seconds: Option<u64>,
    job_retention_count: Option<u64>,
    state_dir: Option<PathBuf>,
    rate_limit: Option<Size>,
    auto_resume: Option<bool>,
    serialize_per_disk: Option<bool>,
    run_without_checkpoints: Option<bool>,
    daemon: DaemonTable,
    engine: EngineTable,
    performance: PerformanceTable,
    security: SecurityTable,
    monitoring: MonitoringTable,
}

/// Reads a configuration file's text (`file` names it in errors).
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: TopLevel = toml::from_str(text).map_err(|err| from_toml(file, text, &err))?;
    let error = |table: &str, key: &str, message: String| ConfigError {
        file: file.to_owned(),
        line: find_key(text, table, key),
        key: Some(qualified(table, key)),
        message,
    };
    let d = &raw.daemon;
    let top = DaemonKeys {
        audit_log: raw.audit_log.clone(),
        max_concurrent_jobs: raw.max_concurrent_jobs,
        job_retention_seconds: raw.job_retention_seconds,
        job_retention_count: raw.job_retention_count,
        state_dir: raw.state_dir.clone(),
        rate_limit: raw.rate_limit,
        auto_resume: raw.auto_resume,
        serialize_per_disk: raw.serialize_per_disk,
        run_without_checkpoints: raw.run_without_checkpoints,
    };
    // A key set twice (top level and [daemon]) is a mistake waiting to be
    // made worse by an edit to the copy that does not count.
    macro_rules! one_of {
        ($name:ident) => {
            match (&top.$name, &d.$name) {
                (Some(_), Some(_)) => {
                    return Err(error(
                        "daemon",
                        stringify!($name),
                        format!(
                            "also set at the top level (line {}): set it once",
                            find_key(text, "", stringify!($name)).unwrap_or(0)
                        ),
                    ))
                }
                (Some(v), None) | (None, Some(v)) => Some(v.clone()),
                (None, None) => None,
            }
        };
    }
    let defaults = Config::default();
    let state_dir = match (one_of!(state_dir), &d.checkpoint_dir) {
        (Some(_), Some(_)) => {
            return Err(error(
                "daemon",
                "checkpoint_dir",
                "names the state directory, which state_dir also sets: set one".into(),
            ))
        }
        (dir, None) => dir,
        (None, Some(dir)) => Some(dir.clone()),
    };
    if let Some(dir) = &state_dir {
        if !dir.is_absolute() {
            let key = if d.checkpoint_dir.is_some() {
                "checkpoint_dir"
            } else {
                "state_dir"
            };
            let table = if d.checkpoint_dir.is_some() || d.state_dir.is_some() {
                "daemon"
            } else {
                ""
            };
            return Err(error(table, key, "must be an absolute path".into()));
        }
    }
    let max_concurrent_jobs = one_of!(max_concurrent_jobs).unwrap_or(defaults.max_concurrent_jobs);
    if max_concurrent_jobs == 0 {
        let table = if d.max_concurrent_jobs.is_some() {
            "daemon"
        } else {
            ""
        };
        return Err(error(
            table,
            "max_concurrent_jobs",
            "must be at least 1 (0 would run no job ever)".into(),
        ));
    }

    let e = &raw.engine;
    let p = &raw.performance;
    let engine_defaults = EngineConfig::default();
    if e.workers.is_some() && p.workers.is_some() {
        return Err(error(
            "performance",
            "workers",
            "also set in [engine]: set it once".into(),
        ));
    }
    if p.io_queue_depth.is_some() && e.io_uring_queue_depth.is_some() {
        return Err(error(
            "performance",
            "io_queue_depth",
            "[engine] io_uring_queue_depth sets the same: set one".into(),
        ));
    }
    if p.default_buffer_size.is_some() && e.io_uring_buffer_kib.is_some() {
        return Err(error(
            "performance",
            "default_buffer_size",
            "[engine] io_uring_buffer_kib sets the same buffers: set one".into(),
        ));
    }
    let queue_depth = p
        .io_queue_depth
        .or(e.io_uring_queue_depth)
        .unwrap_or(engine_defaults.io_uring_queue_depth);
    if queue_depth == 0 || queue_depth > 4096 {
        let (table, key) = if p.io_queue_depth.is_some() {
            ("performance", "io_queue_depth")
        } else {
            ("engine", "io_uring_queue_depth")
        };
        return Err(error(table, key, "must be from 1 to 4096".into()));
    }
    let buffer_kib = match p.default_buffer_size {
        Some(Size(bytes)) => {
            if !(4096..=(64 << 20)).contains(&bytes) {
                return Err(error(
                    "performance",
                    "default_buffer_size",
                    "must be from 4KiB to 64MiB".into(),
                ));
            }
            // One buffer per operation in flight, whole pages (the engine
            // registers them all at once).
            (((bytes as usize + 4095) & !4095) * queue_depth as usize) >> 10
        }
        None => e
            .io_uring_buffer_kib
            .unwrap_or(engine_defaults.io_uring_buffer_kib),
    };
    let engine = EngineConfig {
        workers: p.workers.or(e.workers).unwrap_or(engine_defaults.workers),
        io_uring_queue_depth: queue_depth,
        io_uring_buffer_kib: buffer_kib,
        enable_io_uring: p.enable_io_uring.unwrap_or(true),
        retry: copyd_engine::retry::RetryPolicy {
            attempts: e.retry_attempts.unwrap_or(engine_defaults.retry.attempts),
            backoff: e
                .retry_backoff
                .map_or(engine_defaults.retry.backoff, |Millis(wait)| wait),
        },
    };
    if engine.retry.attempts > 20 {
        return Err(error(
            "engine",
            "retry_attempts",
            "must be from 0 to 20 (the wait doubles with each)".into(),
        ));
    }

    let s = &raw.security;
    let security_defaults = SecurityConfig::default();
    // Extensions are kept without the dot: [".exe"] and ["exe"] mean the
    // same, and both are how people write them.
    let extensions = |list: &Option<Vec<String>>, key: &str| -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        for ext in list.iter().flatten() {
            let bare = ext.strip_prefix('.').unwrap_or(ext);
            if bare.is_empty() || bare.contains('/') {
                return Err(error(
                    "security",
                    key,
                    format!("{ext:?} is not a file name extension"),
                ));
            }
            out.push(bare.to_owned());
        }
        Ok(out)
    };
    let security = SecurityConfig {
        max_file_size: s
            .max_file_size
            .map_or(security_defaults.max_file_size, |s| s.0),
        max_path_length: s
            .max_path_length
            .unwrap_or(security_defaults.max_path_length),
        allowed_extensions: extensions(&s.allowed_extensions, "allowed_extensions")?,
        blocked_extensions: extensions(&s.blocked_extensions, "blocked_extensions")?,
        system_paths: s
            .system_paths
            .clone()
            .unwrap_or(security_defaults.system_paths),
        require_privilege_for_system: s
            .require_privilege_for_system
            .unwrap_or(security_defaults.require_privilege_for_system),
    };

    let m = &raw.monitoring;
    let monitoring_defaults = MonitoringConfig::default();
    let metrics_address = match &m.metrics_address {
        None => monitoring_defaults.metrics_address,
        Some(text) => text.parse().map_err(|_| {
            error(
                "monitoring",
                "metrics_address",
                format!("{text:?} is not an IP address"),
            )
        })?,
    };
    let log_level = m.log_level.clone().unwrap_or(monitoring_defaults.log_level);
    // A lone word must be a level: EnvFilter would take "loud" as a target
    // name and log nothing, silently.
    let levels = ["off", "error", "warn", "info", "debug", "trace"];
    let lone_word = !log_level.contains([',', '=', ':']);
    if (lone_word && !levels.contains(&log_level.to_ascii_lowercase().as_str()))
        || tracing_subscriber::EnvFilter::builder()
            .parse(&log_level)
            .is_err()
    {
        return Err(error(
            "monitoring",
            "log_level",
            format!("{log_level:?} is not a level (error, warn, info, debug, trace) or filter"),
        ));
    }
    let metrics_port = m.metrics_port.unwrap_or(monitoring_defaults.metrics_port);
    let enable_metrics = m.enable_metrics.unwrap_or(false);
    if enable_metrics && metrics_port == 0 {
        return Err(error(
            "monitoring",
            "metrics_port",
            "must not be 0 when enable_metrics is true".into(),
        ));
    }
    let stall_seconds = m.stall_seconds.unwrap_or(monitoring_defaults.stall_seconds);
    if stall_seconds == 0 {
        return Err(error(
            "monitoring",
            "stall_seconds",
            "must be at least 1".into(),
        ));
    }
    let disk_full_percent = m
        .disk_full_percent
        .unwrap_or(monitoring_defaults.disk_full_percent);
    if !(1..=100).contains(&disk_full_percent) {
        return Err(error(
            "monitoring",
            "disk_full_percent",
            "must be from 1 to 100".into(),
        ));
    }
    let monitoring = MonitoringConfig {
        enable_metrics,
        metrics_port,
        metrics_address,
        log_level,
        stall_seconds,
        error_rate_per_minute: m
            .error_rate_per_minute
            .unwrap_or(monitoring_defaults.error_rate_per_minute),
        disk_full_percent,
    };

    Ok(Config {
        security,
        audit_log: one_of!(audit_log),
        max_concurrent_jobs,
        job_retention_seconds: one_of!(job_retention_seconds)
            .unwrap_or(defaults.job_retention_seconds),
        job_retention_count: one_of!(job_retention_count).unwrap_or(defaults.job_retention_count),
        state_dir,
        rate_limit: one_of!(rate_limit).map_or(defaults.rate_limit, |s| s.0),
        auto_resume: one_of!(auto_resume).unwrap_or(defaults.auto_resume),
        serialize_per_disk: one_of!(serialize_per_disk).unwrap_or(defaults.serialize_per_disk),
        run_without_checkpoints: one_of!(run_without_checkpoints)
            .unwrap_or(defaults.run_without_checkpoints),
        engine,
        monitoring,
        socket_path: d.socket_path.clone(),
        file: None,
        state_dir_from_command_line: false,
    })
}

fn qualified(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// The line (1-based) where `key` is set in `[table]` ("" for the top
/// level), by reading the file as a person would: table headers and
/// `key = value` lines. Enough for the files copyd reads, which have no
/// inline tables or dotted keys.
pub fn find_key(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header.split(']').next().unwrap_or("").trim().to_owned();
            continue;
        }
        if current == table {
            if let Some((name, _)) = line.split_once('=') {
                if name.trim().trim_matches('"') == key {
                    return Some(number + 1);
                }
            }
        }
    }
    None
}

/// Reads `text` (the file `file`) into `T` strictly, a mistake reported as
/// `file:line: key: message`: the daemon's rules, for copyctl's file too.
pub fn parse_strict<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|err| from_toml(file, text, &err))
}

/// A toml error as `file:line: key: message`: the line from the error's
/// span, the key from that line (and the table it is in).
fn from_toml(file: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let (line, key) = match err.span() {
        Some(span) => {
            let line_number = text[..span.start.min(text.len())].matches('\n').count();
            let mut table = String::new();
            let mut key = None;
            for (number, line) in text.lines().enumerate() {
                let line = line.trim();
                if let Some(header) = line.strip_prefix('[') {
                    let header = header.split(']').next().unwrap_or("").trim().to_owned();
                    if number == line_number {
                        key = Some(header.clone());
                    }
                    table = header;
                } else if number == line_number {
                    key = line
                        .split_once('=')
                        .map(|(name, _)| qualified(&table, name.trim().trim_matches('"')));
                }
                if number == line_number {
                    break;
                }
            }
            (Some(line_number + 1), key)
        }
        None => (None, None),
    };
    ConfigError {
        file: file.to_owned(),
        line,
        key,
        message: err.message().trim().to_owned(),
    }
}
