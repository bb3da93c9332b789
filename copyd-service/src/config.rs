//! The daemon's configuration: `/etc/copyd/config.toml` for the system
//! service, or the file given with `--config`. Every key is optional.

use std::path::{Path, PathBuf};

use copyd_engine::engines::IoUringConfig;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
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
    /// How jobs copy: the [engine] table.
    pub engine: EngineConfig,
}

/// The copy engine's knobs, the same for every job.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        let io_uring = IoUringConfig::default();
        EngineConfig {
            workers: 0,
            io_uring_queue_depth: io_uring.queue_depth,
            io_uring_buffer_kib: io_uring.buffer_bytes >> 10,
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
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let (path, required) = match path {
            Some(path) => (path, true),
            None => (Path::new(SYSTEM_CONFIG), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default())
            }
            Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
        };
        let config: Config =
            toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
        if config.max_concurrent_jobs == 0 {
            return Err(format!(
                "{}: max_concurrent_jobs must be at least 1",
                path.display()
            ));
        }
        Ok(config)
    }
}

/// The [security] table: rules applied to every request, on top of the
/// caller's own rights (which the kernel enforces). Each refusal is a
/// PolicyRefused error naming the rule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Largest single file copied, in bytes; 0 for no limit.
    pub max_file_size: u64,
    /// Longest path (source, destination, or any file's target) in bytes;
    /// 0 (the default) for no limit beyond the kernel's own PATH_MAX. A
    /// limit makes every job walk its sources once more before it starts.
    pub max_path_length: u64,
    /// If not empty, only files with one of these extensions (without the
    /// dot, case-insensitive) may be copied.
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

    #[test]
    fn unknown_keys_are_refused_and_known_ones_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "max_concurrent_jobs = 3\njob_retention_seconds = 9\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(
            (config.max_concurrent_jobs, config.job_retention_seconds),
            (3, 9)
        );
        assert_eq!(config.job_retention_count, 1000);
        std::fs::write(&file, "job_retention_count = 7\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap().job_retention_count, 7);
        std::fs::write(
            &file,
            "audit_log = \"/tmp/a.log\"\n[security]\nblocked_extensions = [\"exe\"]\n",
        )
        .unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.security.blocked_extensions, vec!["exe".to_string()]);
        assert_eq!(config.security.max_path_length, 0);
        assert!(config.security.require_privilege_for_system);
        assert_eq!(config.audit_log, Some(PathBuf::from("/tmp/a.log")));
        std::fs::write(&file, "[security]\nmax_file_sise = 3\n").unwrap();
        assert!(Config::load(Some(&file)).is_err());
        std::fs::write(&file, "max_concurent_jobs = 3\n").unwrap();
        assert!(Config::load(Some(&file))
            .unwrap_err()
            .contains("unknown field"));
    }

    #[test]
    fn the_engine_table_sets_workers_and_the_io_uring_rings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[engine]
workers = 3
io_uring_queue_depth = 8
",
        )
        .unwrap();
        let engine = Config::load(Some(&file)).unwrap().engine;
        assert_eq!((engine.workers, engine.io_uring().queue_depth), (3, 8));
        // Left out, a key is the engine's own default.
        assert_eq!(
            engine.io_uring().buffer_bytes,
            IoUringConfig::default().buffer_bytes
        );
        assert_eq!(
            Config::default().engine.io_uring(),
            IoUringConfig::default()
        );
        std::fs::write(
            &file,
            "[engine]
threads = 3
",
        )
        .unwrap();
        assert!(Config::load(Some(&file)).is_err());
    }

    #[test]
    fn the_shipped_config_with_every_key_set_is_read() {
        // packaging/config.toml shows every key commented out, with its
        // default or an example: uncommented, copyd must accept all.
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config.toml"),
        )
        .unwrap();
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
        let uncommented: String = shipped
            .lines()
            .filter_map(setting)
            .map(|line| line + "\n")
            .collect();
        assert!(uncommented.contains("io_uring_buffer_kib"), "{uncommented}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, &uncommented).unwrap();
        let config = Config::load(Some(&file)).unwrap();
        assert_eq!(config.engine, EngineConfig::default());
    }
}
