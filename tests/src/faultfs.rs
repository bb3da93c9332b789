//! faultfs: a FUSE pass-through file system of ours that injects faults
//! (src/bin/faultfs.rs), and the harness that mounts it for a test.
//!
//! Real disks fail in ways a tmpfs never does: a read fails at one offset,
//! a read or write is interrupted, a device stalls, a file system reports a
//! size that is not what a read finds, the disk fills up, a byte comes back
//! different from what was written. faultfs passes every operation through
//! to a backing directory and applies [`Rule`]s on the way.
//!
//! ```no_run
//! use copyd_tests::faultfs::{FaultFs, Rule, Times};
//! use rustix::io::Errno;
//! let backing = copyd_tests::scratch_dir("backing");
//! let fs = FaultFs::mount(backing.path());
//! fs.set_rules(&[Rule::read_error("src/big.bin", 4096, Errno::IO, Times::Once)]);
//! // ... copy from fs.path().join("src") ...
//! assert_eq!(fs.log().len(), 1);
//! ```
//!
//! The rule document (the `--rules FILE` argument of the binary, and what
//! is written to `<mount>/.faultfs-rules`) is [`RuleSet`] as JSON; see
//! tests/README.md for the format. The log `<mount>/.faultfs-log` has one
//! [`Injected`] as JSON per line.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use serde::{Deserialize, Serialize};

/// The control file: write a [`RuleSet`] to replace the rules (applied on
/// fsync, flush or close); read it for the rules in force.
pub const RULES_FILE: &str = ".faultfs-rules";
/// The log of injected faults, one [`Injected`] (JSON) per line.
pub const LOG_FILE: &str = ".faultfs-log";
/// A file pattern that matches every file.
pub const ALL: &str = "*";

/// How often a fault fires, counted per rule from the moment the rules
/// were set (replacing the rules restarts every count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Times {
    /// The first time the rule matches, then never again.
    Once,
    /// The first n times the rule matches.
    Count(u32),
    /// Every time.
    #[default]
    Always,
}

/// The operation a [`Rule::transient`] error hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// open(2) of an existing file and create (O_CREAT of a new one).
    Open,
    Read,
    Write,
}

/// What [`Rule::wrong_size`] reports as `st_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeChange {
    /// The real size plus this (saturating at 0).
    Delta(i64),
    /// This size, whatever the real one.
    Absolute(u64),
}

/// One fault. `file` is a pattern on the path relative to the root of the
/// file system, without a leading `/` (`dir/a.bin`): an exact path, or a
/// pattern where `*` is any run of characters, `/` included (`*.bin`,
/// `dst/*`, `*` for all files), and `?` one character. Paths are the names
/// at the time of the operation: copyd writes `dir/.copyd-<tag>-<n>.tmp`
/// and renames it into place, so a write rule for a copy's destination
/// wants a pattern like `dst/.copyd-*.tmp`, and a read rule for a read-back
/// after the rename the final name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// A read whose range (as the file system sees it: the part of the
    /// requested range that lies in the file) covers `offset` fails with
    /// `errno`.
    ReadError {
        file: String,
        offset: u64,
        #[serde(with = "errno_name")]
        errno: Errno,
        #[serde(default)]
        times: Times,
    },
    /// A write whose range covers `offset` fails with `errno`; nothing of
    /// it is written.
    WriteError {
        file: String,
        offset: u64,
        #[serde(with = "errno_name")]
        errno: Errno,
        #[serde(default)]
        times: Times,
    },
    /// The first `count` operations `op` on matching files fail with
    /// `errno` (EINTR, EAGAIN: errors a caller should retry).
    Transient {
        file: String,
        op: Op,
        #[serde(with = "errno_name")]
        errno: Errno,
        count: u32,
    },
    /// A read sleeps `secs` seconds before it is served. Only that request
    /// waits: other requests, on the same file too, are served meanwhile.
    Stall {
        file: String,
        secs: f64,
        #[serde(default)]
        times: Times,
    },
    /// `st_size` in lookup, getattr, setattr and create replies is wrong.
    /// The data is not changed: a read finds the real bytes (the kernel
    /// may cut reads at the size it was told).
    WrongSize { file: String, size: SizeChange },
    /// Once `bytes` bytes have been written to matching files (counted
    /// together for all files the rule matches: with [`ALL`] a full file
    /// system), a write fails with ENOSPC. The write that crosses the limit
    /// is short: it writes up to the limit, as a full disk does.
    NoSpaceAfter { file: String, bytes: u64 },
    /// The byte at `offset` comes back from a read XORed with 0xff. The
    /// file itself is not changed.
    FlipByte {
        file: String,
        offset: u64,
        #[serde(default)]
        times: Times,
    },
}

impl Rule {
    pub fn read_error(file: &str, offset: u64, errno: Errno, times: Times) -> Rule {
        Rule::ReadError {
            file: file.into(),
            offset,
            errno,
            times,
        }
    }

    pub fn write_error(file: &str, offset: u64, errno: Errno, times: Times) -> Rule {
        Rule::WriteError {
            file: file.into(),
            offset,
            errno,
            times,
        }
    }

    pub fn transient(file: &str, op: Op, errno: Errno, count: u32) -> Rule {
        Rule::Transient {
            file: file.into(),
            op,
            errno,
            count,
        }
    }

    /// Every read of `file` waits `secs` first; see [`Rule::times`].
    pub fn stall(file: &str, secs: f64) -> Rule {
        Rule::Stall {
            file: file.into(),
            secs,
            times: Times::Always,
        }
    }

    pub fn wrong_size(file: &str, size: SizeChange) -> Rule {
        Rule::WrongSize {
            file: file.into(),
            size,
        }
    }

    /// `file` may be [`ALL`] for a full file system.
    pub fn nospc_after(file: &str, bytes: u64) -> Rule {
        Rule::NoSpaceAfter {
            file: file.into(),
            bytes,
        }
    }

    /// Every read that covers `offset` sees the byte flipped; see
    /// [`Rule::times`].
    pub fn flip_byte(file: &str, offset: u64) -> Rule {
        Rule::FlipByte {
            file: file.into(),
            offset,
            times: Times::Always,
        }
    }

    /// The same rule, firing `times` (for read_error, write_error, stall
    /// and flip_byte; the other kinds have no such count and are returned
    /// unchanged).
    pub fn times(mut self, new: Times) -> Rule {
        match &mut self {
            Rule::ReadError { times, .. }
            | Rule::WriteError { times, .. }
            | Rule::Stall { times, .. }
            | Rule::FlipByte { times, .. } => *times = new,
            Rule::Transient { .. } | Rule::WrongSize { .. } | Rule::NoSpaceAfter { .. } => {}
        }
        self
    }

    /// The file pattern.
    pub fn file(&self) -> &str {
        match self {
            Rule::ReadError { file, .. }
            | Rule::WriteError { file, .. }
            | Rule::Transient { file, .. }
            | Rule::Stall { file, .. }
            | Rule::WrongSize { file, .. }
            | Rule::NoSpaceAfter { file, .. }
            | Rule::FlipByte { file, .. } => file,
        }
    }

    /// The name of the kind, as in the `fault` field of the JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::ReadError { .. } => "read_error",
            Rule::WriteError { .. } => "write_error",
            Rule::Transient { .. } => "transient",
            Rule::Stall { .. } => "stall",
            Rule::WrongSize { .. } => "wrong_size",
            Rule::NoSpaceAfter { .. } => "no_space_after",
            Rule::FlipByte { .. } => "flip_byte",
        }
    }

    /// Whether `path` (relative to the root) matches this rule's file.
    pub fn matches(&self, path: &str) -> bool {
        glob_match(
            self.file().trim_start_matches('/').as_bytes(),
            path.as_bytes(),
        )
    }
}

/// `*` is any run of bytes (`/` too), `?` one byte, the rest literal.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative with one backtrack point: the last `*` seen.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The whole rule document.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

/// One fault that fired, as logged in `<mount>/.faultfs-log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injected {
    /// Which rule set: 0 for the rules given at mount time, +1 each time
    /// the rules are replaced.
    pub generation: u64,
    /// Index of the rule in its rule set.
    pub rule: usize,
    /// The rule's kind ([`Rule::kind`]).
    pub fault: String,
    /// The operation: open, create, read, write, getattr, ...
    pub op: String,
    /// The file's path relative to the root.
    pub path: String,
    /// The offset of the request (read/write), if any.
    pub offset: Option<u64>,
    /// The error returned, if the fault is an error (raw errno).
    pub errno: Option<i32>,
}

/// Errnos in the JSON: a name ("EIO") or a number (5). Written as a name
/// when it is one of these.
const ERRNO_NAMES: &[(&str, Errno)] = &[
    ("EIO", Errno::IO),
    ("EINTR", Errno::INTR),
    ("EAGAIN", Errno::AGAIN),
    ("ENOSPC", Errno::NOSPC),
    ("EDQUOT", Errno::DQUOT),
    ("EROFS", Errno::ROFS),
    ("EACCES", Errno::ACCESS),
    ("EPERM", Errno::PERM),
    ("ENOENT", Errno::NOENT),
    ("EFBIG", Errno::FBIG),
    ("ENOMEM", Errno::NOMEM),
    ("EINVAL", Errno::INVAL),
    ("ESTALE", Errno::STALE),
    ("ENXIO", Errno::NXIO),
    ("ETIMEDOUT", Errno::TIMEDOUT),
    ("EBADF", Errno::BADF),
    ("ENODATA", Errno::NODATA),
];

/// The name of an errno ("EIO"), or its number as text.
pub fn errno_to_name(errno: Errno) -> String {
    ERRNO_NAMES
        .iter()
        .find(|(_, e)| *e == errno)
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| errno.raw_os_error().to_string())
}

mod errno_name {
    use super::{errno_to_name, Errno, ERRNO_NAMES};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(errno: &Errno, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&errno_to_name(*errno))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NameOrNumber {
        Name(String),
        Number(i32),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Errno, D::Error> {
        match NameOrNumber::deserialize(d)? {
            NameOrNumber::Number(n) if n > 0 && n < 4096 => Ok(Errno::from_raw_os_error(n)),
            NameOrNumber::Number(n) => Err(serde::de::Error::custom(format!("bad errno {n}"))),
            NameOrNumber::Name(name) => ERRNO_NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, e)| *e)
                .or_else(|| name.parse().ok().map(Errno::from_raw_os_error))
                .ok_or_else(|| serde::de::Error::custom(format!("unknown errno {name:?}"))),
        }
    }
}

/// Why faultfs cannot be mounted here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (faultfs mounts with allow_other and runs as root)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse missing (no FUSE in this kernel or container)".into());
    }
    let fusermount = Command::new("fusermount3")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !fusermount.map(|s| s.success()).unwrap_or(false) {
        return Some("fusermount3 missing (apt-get install fuse3)".into());
    }
    None
}

/// A mounted faultfs over a backing directory. Drop unmounts it
/// (`fusermount3 -u -z`) and ends the process; a failing test prints its
/// stderr.
pub struct FaultFs {
    child: Option<Child>,
    /// Holds the mount point (`mnt`) and faultfs's stderr (`stderr`).
    dir: tempfile::TempDir,
    mnt: PathBuf,
    backing: PathBuf,
}

impl FaultFs {
    /// Mounts faultfs over `backing` with no rules, or panics.
    pub fn mount(backing: &Path) -> FaultFs {
        Self::mount_with(backing, &[])
    }

    /// Mounts with `rules` in force from the first request (generation 0).
    pub fn mount_with(backing: &Path, rules: &[Rule]) -> FaultFs {
        let dir = crate::scratch_dir("faultfs");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let rules_path = dir.path().join("rules.json");
        fs::write(&rules_path, rules_json(rules)).unwrap();
        let stderr = File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(crate::bins::faultfs())
            .arg(backing)
            .arg(&mnt)
            .arg("--rules")
            .arg(&rules_path)
            .arg("--exit-with-parent")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start faultfs");
        let mut fs = FaultFs {
            child: Some(child),
            dir,
            mnt,
            backing: backing.to_path_buf(),
        };
        fs.wait_mounted();
        fs
    }

    /// [`FaultFs::mount`], or None (saying why on stderr) when this machine
    /// cannot mount FUSE. In CI (`CI` set) that is a failure instead:
    /// .ci/run installs fuse3.
    pub fn mount_or_skip(backing: &Path) -> Option<FaultFs> {
        Self::mount_with_or_skip(backing, &[])
    }

    /// [`FaultFs::mount_with`], or None as [`FaultFs::mount_or_skip`].
    pub fn mount_with_or_skip(backing: &Path, rules: &[Rule]) -> Option<FaultFs> {
        if let Some(why) = unavailable() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to mount faultfs: {why}"
            );
            eprintln!("skipping: cannot mount faultfs here: {why}");
            return None;
        }
        Some(Self::mount_with(backing, rules))
    }

    fn wait_mounted(&mut self) {
        // The control file exists only once our file system answers at the
        // mount point (the empty directory under it has no such file).
        let control = self.mnt.join(RULES_FILE);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if control.exists() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "faultfs exited ({status}) before mounting:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!("faultfs not mounted after 10 s:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The backing directory (to look at or prepare files without faults).
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Replaces the rules; every "first N times" count restarts, and
    /// [`FaultFs::log`] starts empty. Panics if faultfs refuses them.
    pub fn set_rules(&self, rules: &[Rule]) {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.mnt.join(RULES_FILE))
            .expect("open the rules file");
        f.write_all(rules_json(rules).as_bytes())
            .expect("write the rules");
        // fsync applies the rules and reports a rejected document (close
        // would too, but std ignores what close says).
        f.sync_all()
            .unwrap_or_else(|e| panic!("faultfs refused the rules ({e}):\n{}", self.stderr()));
    }

    /// Removes all rules (a new generation, as [`FaultFs::set_rules`]).
    pub fn clear_rules(&self) {
        self.set_rules(&[]);
    }

    /// The rules in force, as faultfs has them.
    pub fn rules(&self) -> Vec<Rule> {
        let text = fs::read_to_string(self.mnt.join(RULES_FILE)).expect("read the rules file");
        serde_json::from_str::<RuleSet>(&text)
            .expect("rules file is a RuleSet")
            .rules
    }

    /// The faults injected since the rules were last set.
    pub fn log(&self) -> Vec<Injected> {
        let all = self.log_all();
        let current = self.generation();
        all.into_iter()
            .filter(|i| i.generation == current)
            .collect()
    }

    /// Every fault injected since the mount.
    pub fn log_all(&self) -> Vec<Injected> {
        read_log(&self.mnt.join(LOG_FILE))
    }

    /// The current rule generation: 0 at mount, +1 per [`FaultFs::set_rules`].
    pub fn generation(&self) -> u64 {
        // The rules file's size is not its generation; ask the log file's
        // first line, which faultfs writes as a header.
        let text = fs::read_to_string(self.mnt.join(LOG_FILE)).expect("read the log");
        parse_generation(&text)
    }

    /// What faultfs wrote on stderr (one line per injected fault, and
    /// errors).
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

fn rules_json(rules: &[Rule]) -> String {
    serde_json::to_string_pretty(&RuleSet {
        rules: rules.to_vec(),
    })
    .unwrap()
}

/// The log file starts with `# generation N`, then one JSON per line.
fn parse_generation(text: &str) -> u64 {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("# generation "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the log starts with '# generation N'")
}

fn read_log(path: &Path) -> Vec<Injected> {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("read the log");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}")))
        .collect()
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            // Unmounted, faultfs's session ends and it exits by itself.
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- faultfs stderr ---\n{}", self.stderr());
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"a/b.bin", b"a/b.bin"));
        assert!(!glob_match(b"a/b.bin", b"a/b.bin2"));
        assert!(glob_match(b"*.bin", b"x/y/z.bin"));
        assert!(glob_match(b"dst/.copyd-*.tmp", b"dst/.copyd-7-0.tmp"));
        assert!(!glob_match(b"dst/.copyd-*.tmp", b"dst/a"));
        assert!(glob_match(b"*", b"anything/at/all"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
    }

    #[test]
    fn rules_round_trip_through_json() {
        let rules = vec![
            Rule::read_error("a", 1, Errno::IO, Times::Once),
            Rule::write_error("b", 2, Errno::NOSPC, Times::Count(2)),
            Rule::transient("c", Op::Open, Errno::INTR, 3),
            Rule::stall("d", 0.5).times(Times::Once),
            Rule::wrong_size("e", SizeChange::Delta(-3)),
            Rule::wrong_size("e", SizeChange::Absolute(7)),
            Rule::nospc_after(ALL, 100),
            Rule::flip_byte("f", 9),
        ];
        let back: RuleSet = serde_json::from_str(&rules_json(&rules)).unwrap();
        assert_eq!(back.rules, rules);
        let doc = r#"{"rules":[{"fault":"read_error","file":"x","offset":4,"errno":5},
                      {"fault":"transient","file":"y","op":"read","errno":"EAGAIN","count":2}]}"#;
        let set: RuleSet = serde_json::from_str(doc).unwrap();
        assert_eq!(
            set.rules,
            vec![
                Rule::read_error("x", 4, Errno::IO, Times::Always),
                Rule::transient("y", Op::Read, Errno::AGAIN, 2)
            ]
        );
        let typo = r#"{"rules":[{"fault":"read_error","file":"x","ofset":4,"errno":"EIO"}]}"#;
        assert!(serde_json::from_str::<RuleSet>(typo).is_err());
    }
}
