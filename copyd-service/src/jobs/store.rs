//! Job checkpoints on disk: one file per job in `<state_dir>/jobs/`.
//!
//! A checkpoint is written crash-safely (temporary file, fsync, rename,
//! fsync of the directory), so after a crash each job's file is either the
//! old checkpoint or the new one, never a torn mix. Each file starts with a
//! header line `copyd-job <version> <crc32 of the body>` and then the JSON
//! body; a file that is not ours, of another version, or whose checksum does
//! not match is reported and moved aside to `jobs/rejected/`, never trusted.
//!
//! The on-disk records are their own types, not the engine's: the format is
//! versioned and must not change because an in-memory struct did.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const MAGIC: &str = "copyd-job";
pub const VERSION: u32 = 1;

/// The caller a job acts for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerRecord {
    pub uid: u32,
    pub pid: Option<u32>,
    /// The caller's groups, as the bus reported them.
    #[serde(default)]
    pub gids: Vec<u32>,
    /// polkit allowed the job to run with copyd's own rights.
    #[serde(default)]
    pub privileged: bool,
}

/// One resolved source → target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub source: Vec<u8>,
    pub target: Vec<u8>,
    /// "file", "directory" or "symlink".
    pub kind: String,
    pub skip: bool,
    pub replace: bool,
    /// Placed entry by entry into what exists (absent from older records).
    #[serde(default)]
    pub merge: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionsRecord {
    pub recursive: bool,
    /// "fail", "skip" or "overwrite".
    pub on_conflict: String,
    pub engine: String,
    /// Names as the `preserve` option takes them.
    pub preserve: Vec<String>,
    pub rate_limit: u64,
    /// The `sync` option (absent from checkpoints written before it: on).
    #[serde(default = "on")]
    pub sync: bool,
    /// The `sparse` option (absent from older checkpoints: on).
    #[serde(default = "on")]
    pub sparse: bool,
    /// The `rename` expression and `rename-dirs` (absent: no renaming).
    #[serde(default)]
    pub rename: Option<(String, bool)>,
    /// The `verify` method (absent from older checkpoints: none).
    #[serde(default = "none")]
    pub verify: String,
    /// The `on-error` policy (absent from older checkpoints: continue).
    #[serde(default = "continue_")]
    pub on_error: String,
    /// The `keep-replaced-attributes` option (absent from older
    /// checkpoints: off).
    #[serde(default)]
    pub keep_replaced_attributes: bool,
}

fn none() -> String {
    "none".into()
}

fn continue_() -> String {
    "continue".into()
}

fn on() -> bool {
    true
}

/// A job's progress counts, kept so that a restarted copyd shows what a
/// job had done, not 0/0 (absent from older records: zeros).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CountsRecord {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
}

/// Everything needed to show a job after a restart and to carry it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    /// "copy" or "move".
    pub operation: String,
    pub caller: CallerRecord,
    pub sources: Vec<Vec<u8>>,
    pub destination: Vec<u8>,
    pub options: OptionsRecord,
    pub items: Vec<ItemRecord>,
    /// The job's state when this was written.
    pub state: String,
    /// Indexes of items that are finished (in place, durable).
    pub items_done: Vec<usize>,
    /// The job's priority in the queue (higher first).
    #[serde(default)]
    pub priority: i32,
    pub created_us: u64,
    pub start_time_us: u64,
    pub end_time_us: u64,
    /// (D-Bus error name suffix, message) of a failed or cancelled job.
    pub error: Option<(String, String)>,
    /// What the job's temporary names are made from (see `Job::temp_tag`).
    /// Checkpoints written before it had none: their names used the id.
    #[serde(default)]
    pub temp_tag: Option<String>,
    /// The counts when this was written.
    #[serde(default)]
    pub counts: CountsRecord,
}

/// Why a checkpoint file was not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub file: PathBuf,
    pub reason: String,
}

/// One line of a job's progress log (`<id>.log`): how far its items got
/// since the last checkpoint. Appended, never rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogEntry {
    /// The item's building starts afresh: what the log said of it before no
    /// longer holds.
    Started { item: usize },
    /// The item is built whole and is this inode (for a move by rename: the
    /// source about to be renamed); its rename into place comes next.
    Built {
        item: usize,
        copy: copyd_engine::CopyIdentity,
    },
    /// These files of the item are complete and durable in its temporary copy.
    Durable { item: usize, files: Vec<Vec<u8>> },
    /// This many leading bytes of a file of the item are durable.
    Offset {
        item: usize,
        file: Vec<u8>,
        identity: copyd_engine::FileIdentity,
        offset: u64,
    },
    /// The item is in place (a move's source deleted): a later run skips it.
    Done { item: usize },
    /// The job ended: this says its state, times and error over the
    /// checkpoint's (written as a line, not a rewritten checkpoint, as every
    /// job ends).
    Ended {
        state: String,
        start_time_us: u64,
        end_time_us: u64,
        error: Option<(String, String)>,
        /// The job's final counts (absent from lines of older copyds:
        /// the checkpoint's then stand).
        #[serde(default)]
        counts: Option<CountsRecord>,
    },
    /// The job's counts at this point (not flushed: written every few
    /// seconds while it runs and whenever its checkpoint is): a job killed
    /// mid-run still shows how far it got.
    Counts { counts: CountsRecord },
}

pub struct Store {
    dir: PathBuf,
}

/// A job's progress log, open for appending. Writes go through the open
/// file, so any thread may append, whatever rights it runs with (the
/// engine's threads act as the job's caller, who may not open copyd's
/// state directory).
pub struct ProgressLog(File);

impl ProgressLog {
    /// Appends `entry`, and with `durable` makes it (and every line before
    /// it) durable. Without, the line survives copyd being killed but maybe
    /// not a power loss. Each line carries its own checksum, so a line torn
    /// by a crash is seen.
    ///
    /// (A new log's name is not fsynced in its directory: ext4, xfs and
    /// btrfs make a new file's name durable with the file's first fsync.)
    pub fn append(&self, entry: &LogEntry, durable: bool) -> io::Result<()> {
        self.append_all(std::slice::from_ref(entry), durable)
    }

    /// Appends `entries` in one write (a group of items' lines: one system
    /// call instead of one per line).
    pub fn append_all(&self, entries: &[LogEntry], durable: bool) -> io::Result<()> {
        let mut lines = Vec::with_capacity(entries.len() * 48);
        for entry in entries {
            let body = serde_json::to_vec(entry).expect("log entries serialize");
            lines.extend_from_slice(format!("{:08x} ", crc32fast::hash(&body)).as_bytes());
            lines.extend_from_slice(&body);
            lines.push(b'\n');
        }
        // One write: O_APPEND keeps the lines of several threads whole.
        (&self.0).write_all(&lines)?;
        if durable {
            self.0.sync_data()?;
        }
        Ok(())
    }
}

fn encode(record: &JobRecord) -> Vec<u8> {
    let body = serde_json::to_vec(record).expect("job records serialize");
    let mut out = format!("{MAGIC} {VERSION} {:08x}\n", crc32fast::hash(&body)).into_bytes();
    out.extend_from_slice(&body);
    out
}

fn decode(bytes: &[u8]) -> Result<JobRecord, String> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let body = &bytes[newline + 1..];
    let fields: Vec<&str> = header.split(' ').collect();
    let [magic, version, crc] = fields[..] else {
        return Err(format!("malformed header {header:?}"));
    };
    if magic != MAGIC {
        return Err(format!("not a copyd checkpoint (header {header:?})"));
    }
    if version != VERSION.to_string() {
        return Err(format!(
            "checkpoint version {version}, this copyd reads {VERSION}"
        ));
    }
    let expected =
        u32::from_str_radix(crc, 16).map_err(|_| format!("bad checksum field {crc:?}"))?;
    let actual = crc32fast::hash(body);
    if actual != expected {
        return Err(format!(
            "checksum mismatch: header says {expected:08x}, body has {actual:08x}"
        ));
    }
    serde_json::from_slice(body).map_err(|err| format!("body does not parse: {err}"))
}

impl Store {
    /// Opens (creating) `<state_dir>/jobs`, private to the daemon, and checks
    /// that it can be written.
    pub fn open(state_dir: &Path) -> io::Result<Store> {
        let dir = state_dir.join("jobs");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let probe = dir.join(".write-test");
        File::create(&probe)?;
        fs::remove_file(&probe)?;
        Ok(Store { dir })
    }

    fn file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.job"))
    }

    /// Writes `record` so that a crash leaves the old or the new version.
    pub fn save(&self, record: &JobRecord) -> io::Result<()> {
        let final_path = self.file(record.id);
        let temp = self.dir.join(format!(".{}.job.tmp", record.id));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&encode(record))?;
        file.sync_data()?;
        fs::rename(&temp, &final_path)?;
        File::open(&self.dir)?.sync_all()
    }

    fn log_file(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Opens job `id`'s progress log for appending, creating it.
    pub fn open_log(&self, id: u64) -> io::Result<ProgressLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.log_file(id))?;
        Ok(ProgressLog(file))
    }

    /// Job `id`'s progress log up to its first damaged line.
    pub fn read_log(&self, id: u64) -> Vec<LogEntry> {
        let Ok(bytes) = fs::read(self.log_file(id)) else {
            return Vec::new();
        };
        let mut entries = Vec::new();
        for line in bytes.split(|&b| b == b'\n') {
            let parsed = (|| {
                let (crc, body) = (line.get(..8)?, line.get(9..)?);
                let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
                (crc32fast::hash(body) == crc).then_some(())?;
                serde_json::from_slice::<LogEntry>(body).ok()
            })();
            match parsed {
                Some(entry) => entries.push(entry),
                // The tail a crash tore (or the empty piece after the last
                // newline): nothing after it was acknowledged.
                None => break,
            }
        }
        entries
    }

    pub fn remove(&self, id: u64) -> io::Result<()> {
        let _ = fs::remove_file(self.log_file(id));
        match fs::remove_file(self.file(id)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => File::open(&self.dir)?.sync_all(),
        }
    }

    /// Loads every checkpoint, oldest id first. Files that cannot be trusted
    /// are moved to `jobs/rejected/` and reported.
    pub fn load_all(&self) -> (Vec<JobRecord>, Vec<Rejected>) {
        let (mut records, mut rejected) = (Vec::new(), Vec::new());
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (records, rejected);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A checkpoint write that a crash interrupted: the previous
                // version (if any) is still in place.
                let _ = fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".job") {
                continue;
            }
            let result = fs::read(&path)
                .map_err(|err| err.to_string())
                .and_then(|bytes| decode(&bytes))
                .and_then(|record| {
                    if format!("{}.job", record.id) == name {
                        Ok(record)
                    } else {
                        Err(format!("file name does not match job id {}", record.id))
                    }
                });
            match result {
                Ok(record) => records.push(record),
                Err(reason) => {
                    let aside = self.set_aside(&path);
                    rejected.push(Rejected {
                        file: aside.unwrap_or(path),
                        reason,
                    });
                }
            }
        }
        records.sort_by_key(|record| record.id);
        (records, rejected)
    }

    fn set_aside(&self, path: &Path) -> Option<PathBuf> {
        let rejected = self.dir.join("rejected");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&rejected)
            .ok()?;
        let target = rejected.join(path.file_name()?);
        fs::rename(path, &target).ok()?;
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> JobRecord {
        JobRecord {
            id,
            operation: "copy".into(),
            caller: CallerRecord {
                uid: 1000,
                pid: Some(42),
                gids: vec![1000, 27],
                privileged: false,
            },
            sources: vec![b"/src/caf\xe9".to_vec()],
            destination: b"/dst".to_vec(),
            options: OptionsRecord {
                recursive: true,
                on_conflict: "fail".into(),
                engine: "auto".into(),
                preserve: vec!["mode".into()],
                rate_limit: 0,
                sync: false,
                sparse: true,
                rename: Some((r"s/\.txt$/.bak/".into(), true)),
                verify: "sha256".into(),
                on_error: "stop".into(),
                keep_replaced_attributes: true,
            },
            items: vec![ItemRecord {
                source: b"/src/caf\xe9".to_vec(),
                target: b"/dst".to_vec(),
                kind: "directory".into(),
                skip: false,
                replace: false,
                merge: true,
            }],
            state: "running".into(),
            items_done: vec![],
            priority: 0,
            created_us: 1,
            start_time_us: 2,
            end_time_us: 0,
            error: None,
            temp_tag: Some(format!("{id}-00112233445566ff")),
            counts: CountsRecord {
                bytes_done: 5,
                bytes_total: 9,
                files_done: 1,
                files_total: 2,
            },
        }
    }

    #[test]
    fn saved_records_load_back_and_damaged_ones_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save(&record(1)).unwrap();
        store.save(&record(2)).unwrap();
        // Flip one byte of job 2's body: the checksum must catch it.
        let file = dir.path().join("jobs/2.job");
        let mut bytes = fs::read(&file).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        fs::write(&file, bytes).unwrap();
        // A foreign file with our extension.
        fs::write(dir.path().join("jobs/7.job"), b"other-format 1 0\n{}").unwrap();

        let (records, rejected) = store.load_all();
        assert_eq!(records, vec![record(1)]);
        let mut reasons: Vec<_> = rejected.iter().map(|r| r.reason.clone()).collect();
        reasons.sort();
        assert!(reasons[0].starts_with("checksum mismatch"), "{reasons:?}");
        assert!(
            reasons[1].starts_with("not a copyd checkpoint"),
            "{reasons:?}"
        );
        assert!(dir.path().join("jobs/rejected/2.job").exists());
        assert!(!file.exists());
    }

    #[test]
    fn the_log_reads_back_to_its_first_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entries = [
            LogEntry::Started { item: 0 },
            LogEntry::Durable {
                item: 0,
                files: vec![b"a".to_vec(), b"caf\xe9".to_vec()],
            },
            LogEntry::Done { item: 0 },
            LogEntry::Ended {
                state: "failed".into(),
                start_time_us: 1,
                end_time_us: 2,
                error: Some(("NoSpace".into(), "no space left".into())),
                counts: Some(CountsRecord::default()),
            },
        ];
        let log = store.open_log(4).unwrap();
        for (i, entry) in entries.iter().enumerate() {
            log.append(entry, i % 2 == 0).unwrap();
        }
        // A crash in the middle of the third append.
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.path().join("jobs/4.log"))
            .unwrap();
        log.write_all(b"0badc0de {\"Started\":{\"it").unwrap();
        assert_eq!(store.read_log(4), entries);
    }

    #[test]
    fn options_keep_sync_and_older_checkpoints_mean_sync() {
        let loaded = decode(&encode(&record(5))).unwrap();
        assert!(!loaded.options.sync);
        // A checkpoint written before the option existed.
        let body = br#"{"recursive":true,"on_conflict":"fail","engine":"auto","preserve":[],"rate_limit":0}"#;
        let options: OptionsRecord = serde_json::from_slice(body).unwrap();
        assert!(options.sync && options.sparse);
    }

    /// Checkpoints and end lines of a copyd that kept no counts still load:
    /// the counts are zeros, or (an end line's) the checkpoint's.
    #[test]
    fn records_without_counts_load() {
        let mut body = serde_json::to_value(record(6)).unwrap();
        body.as_object_mut().unwrap().remove("counts");
        let loaded: JobRecord = serde_json::from_value(body).unwrap();
        assert_eq!(loaded.counts, CountsRecord::default());
        let line =
            br#"{"Ended":{"state":"completed","start_time_us":1,"end_time_us":2,"error":null}}"#;
        let entry: LogEntry = serde_json::from_slice(line).unwrap();
        assert!(matches!(entry, LogEntry::Ended { counts: None, .. }));
    }

    #[test]
    fn a_newer_version_is_not_trusted() {
        let mut bytes = encode(&record(3));
        bytes[MAGIC.len() + 1] = b'9';
        assert!(decode(&bytes).unwrap_err().contains("version 9"));
    }
}
