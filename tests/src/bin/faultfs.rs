//! faultfs: a FUSE pass-through file system that injects faults.
//!
//!     faultfs BACKING MOUNTPOINT [--rules RULES.json] [--exit-with-parent]
//!
//! Every operation goes to the same path under BACKING; the rules (the
//! types and their JSON are in copyd_tests::faultfs, the format in
//! tests/README.md) make some of them fail, wait, or lie. Write a new rule
//! document to `MOUNTPOINT/.faultfs-rules` to replace the rules; read
//! `MOUNTPOINT/.faultfs-log` for the faults injected. Both are hidden from
//! readdir. Runs in the foreground until unmounted (`fusermount3 -u`);
//! meant to run as root, mounted `allow_other,default_permissions` so that
//! any user can use it and the kernel checks permissions from the modes we
//! report, as on a real file system.
//!
//! How it stays a faithful pass-through:
//! - Each inode we know holds an O_PATH descriptor of the backing inode
//!   (as libfuse's passthrough_ll), so renames, hard links and files
//!   unlinked while open keep working; the inode number the kernel sees is
//!   the backing one, so `st_ino` and hard links are what they are below.
//! - Files created for a caller who is not root are given to that caller
//!   (we create them as root).
//! - Entry and attribute timeouts are 0: the kernel asks again each time,
//!   so a changed rule (a wrong size) shows at once, and changes made
//!   directly in BACKING are seen.
//! - Every open file is direct_io, never FOPEN_KEEP_CACHE: no read is served
//!   from the page cache, so a read fault fires on the read(2) that covers
//!   its offset, and a read-back after writing sees a flipped byte even
//!   without dropping caches; writes reach us one write(2) at a time, so
//!   ENOSPC and write errors are returned by the write that caused them.
//!   The price: no shared mmap of files on faultfs (copyd does not mmap).
//! - copy_file_range is not implemented, so no byte bypasses the rules:
//!   within faultfs the kernel falls back to splicing through our read and
//!   write; to or from another file system the call fails with EXDEV and
//!   the caller falls back to read and write (as copyd does).
//! - No POSIX ACLs (the kernel's FUSE ACL support is not enabled); plain
//!   xattrs pass through, except on symlinks.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use copyd_tests::faultfs::{Injected, Op, Rule, RuleSet, SizeChange, Times, LOG_FILE, RULES_FILE};
use fuser::{
    consts::FOPEN_DIRECT_IO, FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, FUSE_ROOT_ID,
};
use rustix::fs::{
    AtFlags, FallocateFlags, Gid, Mode, OFlags, RenameFlags, SeekFrom, StatxFlags, Timespec,
    Timestamps, Uid, XattrFlags, CWD, UTIME_NOW, UTIME_OMIT,
};
use rustix::io::Errno;

/// Zero: see the module comment.
const TTL: Duration = Duration::ZERO;
const RULES_INO: u64 = u64::MAX - 1;
const LOG_INO: u64 = u64::MAX - 2;
/// A backing inode numbered 1 that is not our root (1 is FUSE's root id).
const INO_ONE_ALIAS: u64 = u64::MAX - 3;

// ---------------------------------------------------------------- faults

struct FaultState {
    generation: u64,
    rules: Vec<Rule>,
    /// How often each rule fired (or, for wrong_size, changed a reply).
    fired: Vec<u64>,
    /// Bytes written to the files of each no_space_after rule.
    written: Vec<u64>,
    /// JSON lines of [`Injected`].
    log: String,
}

/// The rules and their counts, shared with the threads that serve stalled
/// reads.
struct Faults(Mutex<FaultState>);

fn allows(fired: u64, times: Times) -> bool {
    match times {
        Times::Once => fired < 1,
        Times::Count(n) => fired < u64::from(n),
        Times::Always => true,
    }
}

impl FaultState {
    fn record(&mut self, rule: usize, op: &str, path: &str, offset: Option<u64>, e: Option<Errno>) {
        let entry = Injected {
            generation: self.generation,
            rule,
            fault: self.rules[rule].kind().to_string(),
            op: op.to_string(),
            path: path.to_string(),
            offset,
            errno: e.map(|e| e.raw_os_error()),
        };
        let line = serde_json::to_string(&entry).unwrap();
        eprintln!("faultfs: injected {line}");
        self.log.push_str(&line);
        self.log.push('\n');
    }

    /// Takes one firing of rule `i` if `times` allows it.
    fn take(&mut self, i: usize, times: Times) -> bool {
        if allows(self.fired[i], times) {
            self.fired[i] += 1;
            true
        } else {
            false
        }
    }

    /// The first transient rule for `op` on `path` that still has a count.
    fn transient(
        &mut self,
        op: Op,
        op_name: &str,
        path: &str,
        offset: Option<u64>,
    ) -> Result<(), Errno> {
        for i in 0..self.rules.len() {
            if let Rule::Transient {
                op: o,
                errno,
                count,
                ..
            } = self.rules[i]
            {
                if o == op && self.rules[i].matches(path) && self.take(i, Times::Count(count)) {
                    self.record(i, op_name, path, offset, Some(errno));
                    return Err(errno);
                }
            }
        }
        Ok(())
    }
}

impl Faults {
    fn new(rules: Vec<Rule>) -> Faults {
        let n = rules.len();
        Faults(Mutex::new(FaultState {
            generation: 0,
            rules,
            fired: vec![0; n],
            written: vec![0; n],
            log: String::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        // A panic on a stall thread must not take the file system down.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New rules, new counts, a new generation; the log keeps what was.
    fn replace(&self, rules: Vec<Rule>) -> u64 {
        let mut s = self.lock();
        s.generation += 1;
        s.fired = vec![0; rules.len()];
        s.written = vec![0; rules.len()];
        s.rules = rules;
        s.generation
    }

    fn rules_json(&self) -> Vec<u8> {
        let rules = self.lock().rules.clone();
        let mut text = serde_json::to_vec_pretty(&RuleSet { rules }).unwrap();
        text.push(b'\n');
        text
    }

    fn log_text(&self) -> Vec<u8> {
        let s = self.lock();
        format!("# generation {}\n{}", s.generation, s.log).into_bytes()
    }

    fn open(&self, op_name: &str, path: &str) -> Result<(), Errno> {
        self.lock().transient(Op::Open, op_name, path, None)
    }

    /// Before reading: a transient error, or how long to stall.
    fn before_read(&self, path: &str, offset: u64) -> Result<Duration, Errno> {
        let mut s = self.lock();
        s.transient(Op::Read, "read", path, Some(offset))?;
        let mut stall = Duration::ZERO;
        for i in 0..s.rules.len() {
            if let Rule::Stall { secs, times, .. } = s.rules[i] {
                if s.rules[i].matches(path) && s.take(i, times) {
                    s.record(i, "read", path, Some(offset), None);
                    stall += Duration::from_secs_f64(secs.max(0.0));
                }
            }
        }
        Ok(stall)
    }

    /// After reading `data` from `offset`: a read error, flipped bytes.
    fn after_read(&self, path: &str, offset: u64, data: &mut [u8]) -> Result<(), Errno> {
        let mut s = self.lock();
        let end = offset + data.len() as u64;
        let covers = |o: u64| o >= offset && o < end;
        for i in 0..s.rules.len() {
            if let Rule::ReadError {
                offset: o,
                errno,
                times,
                ..
            } = s.rules[i]
            {
                if covers(o) && s.rules[i].matches(path) && s.take(i, times) {
                    s.record(i, "read", path, Some(offset), Some(errno));
                    return Err(errno);
                }
            }
        }
        for i in 0..s.rules.len() {
            if let Rule::FlipByte {
                offset: o, times, ..
            } = s.rules[i]
            {
                if covers(o) && s.rules[i].matches(path) && s.take(i, times) {
                    s.record(i, "read", path, Some(offset), None);
                    data[(o - offset) as usize] ^= 0xff;
                }
            }
        }
        Ok(())
    }

    /// Before writing `len` bytes at `offset`: an error, or how many of
    /// them may be written (fewer when a no_space_after limit is near).
    fn before_write(&self, path: &str, offset: u64, len: usize) -> Result<usize, Errno> {
        let mut s = self.lock();
        s.transient(Op::Write, "write", path, Some(offset))?;
        for i in 0..s.rules.len() {
            if let Rule::WriteError {
                offset: o,
                errno,
                times,
                ..
            } = s.rules[i]
            {
                let covers = o >= offset && o < offset + len as u64;
                if covers && s.rules[i].matches(path) && s.take(i, times) {
                    s.record(i, "write", path, Some(offset), Some(errno));
                    return Err(errno);
                }
            }
        }
        let mut allowed = len;
        for i in 0..s.rules.len() {
            if let Rule::NoSpaceAfter { bytes, .. } = s.rules[i] {
                if s.rules[i].matches(path) {
                    let left = bytes.saturating_sub(s.written[i]);
                    if left == 0 {
                        s.fired[i] += 1;
                        s.record(i, "write", path, Some(offset), Some(Errno::NOSPC));
                        return Err(Errno::NOSPC);
                    }
                    allowed = allowed.min(usize::try_from(left).unwrap_or(usize::MAX));
                }
            }
        }
        Ok(allowed)
    }

    fn wrote(&self, path: &str, n: usize) {
        let mut s = self.lock();
        for i in 0..s.rules.len() {
            if matches!(s.rules[i], Rule::NoSpaceAfter { .. }) && s.rules[i].matches(path) {
                s.written[i] += n as u64;
            }
        }
    }

    /// The size to report for `path`, whose real size is `real`.
    fn size(&self, op: &str, path: &str, real: u64) -> u64 {
        let mut s = self.lock();
        let mut size = real;
        for i in 0..s.rules.len() {
            if let Rule::WrongSize { size: change, .. } = s.rules[i] {
                if s.rules[i].matches(path) {
                    size = match change {
                        SizeChange::Delta(d) => size.saturating_add_signed(d),
                        SizeChange::Absolute(a) => a,
                    };
                    // Logged once per rule set: stat is called all the time.
                    if s.fired[i] == 0 {
                        s.record(i, op, path, None, None);
                    }
                    s.fired[i] += 1;
                }
            }
        }
        size
    }
}

// ------------------------------------------------------- the file system

struct Node {
    /// O_PATH of the backing inode.
    fd: OwnedFd,
    /// Relative to the root, as last looked up or renamed: what rules match.
    path: PathBuf,
    /// The kernel's lookup count: forget() brings it down, at 0 we let go.
    nlookup: u64,
}

struct OpenFile {
    /// Shared with a stall thread that serves a read later.
    file: Arc<File>,
}

struct OpenDir {
    fd: OwnedFd,
    /// Read at opendir: readdir serves by index, stable across calls.
    entries: Vec<(u64, FileType, OsString)>,
}

/// An open control file: what a read sees (taken at open), or what was
/// written so far (applied on fsync, flush and release).
struct Control {
    ino: u64,
    content: Vec<u8>,
    dirty: bool,
}

struct FaultFs {
    root_backing_ino: u64,
    nodes: HashMap<u64, Node>,
    files: HashMap<u64, OpenFile>,
    dirs: HashMap<u64, OpenDir>,
    controls: HashMap<u64, Control>,
    next_fh: u64,
    faults: Arc<Faults>,
    euid: u32,
    egid: u32,
    started: SystemTime,
}

fn err(e: Errno) -> i32 {
    e.raw_os_error()
}

fn io_err(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(Errno::IO.raw_os_error())
}

/// `reply.error(..)` and return, for a failed step.
macro_rules! tri {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(err(e)),
        }
    };
}

fn stat_fd(fd: impl AsFd) -> Result<rustix::fs::Statx, Errno> {
    rustix::fs::statx(
        fd,
        "",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )
}

/// A path that opens the inode behind an O_PATH descriptor.
fn proc_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn time(t: rustix::fs::StatxTimestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.tv_nsec));
    if t.tv_sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.tv_sec as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(t.tv_sec.unsigned_abs()) + nanos
    }
}

fn timespec(t: Option<TimeOrNow>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos().into(),
            },
            Err(before) => {
                let d = before.duration();
                let (mut sec, mut nsec) = (-(d.as_secs() as i64), -i64::from(d.subsec_nanos()));
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                Timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                }
            }
        },
    }
}

fn kind_of_mode(mode: u32) -> FileType {
    match mode & 0o170000 {
        0o040000 => FileType::Directory,
        0o120000 => FileType::Symlink,
        0o010000 => FileType::NamedPipe,
        0o140000 => FileType::Socket,
        0o020000 => FileType::CharDevice,
        0o060000 => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn kind_of_dirent(t: rustix::fs::FileType) -> Option<FileType> {
    use rustix::fs::FileType as T;
    Some(match t {
        T::RegularFile => FileType::RegularFile,
        T::Directory => FileType::Directory,
        T::Symlink => FileType::Symlink,
        T::Fifo => FileType::NamedPipe,
        T::Socket => FileType::Socket,
        T::CharacterDevice => FileType::CharDevice,
        T::BlockDevice => FileType::BlockDevice,
        T::Unknown => return None,
    })
}

/// The kernel's u32 device encoding in FUSE attributes (new_encode_dev).
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn decode_dev(rdev: u32) -> rustix::fs::Dev {
    let major = (rdev >> 8) & 0xfff;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    rustix::fs::makedev(major, minor)
}

fn rel(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn is_control_name(parent: u64, name: &OsStr) -> bool {
    parent == FUSE_ROOT_ID && (name == RULES_FILE || name == LOG_FILE)
}

impl FaultFs {
    fn new(root: OwnedFd, rules: Vec<Rule>) -> Result<FaultFs, Errno> {
        let st = stat_fd(&root)?;
        let mut nodes = HashMap::new();
        nodes.insert(
            FUSE_ROOT_ID,
            Node {
                fd: root,
                path: PathBuf::new(),
                nlookup: 1,
            },
        );
        Ok(FaultFs {
            root_backing_ino: st.stx_ino,
            nodes,
            files: HashMap::new(),
            dirs: HashMap::new(),
            controls: HashMap::new(),
            next_fh: 1,
            faults: Arc::new(Faults::new(rules)),
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            started: SystemTime::now(),
        })
    }

    fn ino_of(&self, backing_ino: u64) -> u64 {
        if backing_ino == self.root_backing_ino {
            FUSE_ROOT_ID
        } else if backing_ino == FUSE_ROOT_ID {
            INO_ONE_ALIAS
        } else {
            backing_ino
        }
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::STALE)
    }

    fn path_of(&self, ino: u64) -> String {
        self.nodes
            .get(&ino)
            .map(|n| rel(&n.path))
            .unwrap_or_default()
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.node(parent)?.path.join(name))
    }

    fn fh(&mut self) -> u64 {
        self.next_fh += 1;
        self.next_fh
    }

    fn attr(&self, op: &str, ino: u64, path: &Path, st: &rustix::fs::Statx) -> FileAttr {
        let mode = u32::from(st.stx_mode);
        let kind = kind_of_mode(mode);
        let size = if kind == FileType::RegularFile {
            self.faults.size(op, &rel(path), st.stx_size)
        } else {
            st.stx_size
        };
        FileAttr {
            ino,
            size,
            blocks: st.stx_blocks,
            atime: time(st.stx_atime),
            mtime: time(st.stx_mtime),
            ctime: time(st.stx_ctime),
            crtime: time(st.stx_btime),
            kind,
            perm: (mode & 0o7777) as u16,
            nlink: st.stx_nlink,
            uid: st.stx_uid,
            gid: st.stx_gid,
            rdev: encode_dev(st.stx_rdev_major, st.stx_rdev_minor),
            blksize: st.stx_blksize,
            flags: 0,
        }
    }

    fn control_attr(&self, ino: u64) -> FileAttr {
        let (size, perm) = if ino == RULES_INO {
            (self.faults.rules_json().len(), 0o644)
        } else {
            (self.faults.log_text().len(), 0o444)
        };
        FileAttr {
            ino,
            size: size as u64,
            blocks: (size as u64).div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: FileType::RegularFile,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Looks `name` up under `parent` and counts a lookup of it.
    fn entry(&mut self, op: &str, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let path = self.child_path(parent, name)?;
        let fd = rustix::fs::openat(
            &self.node(parent)?.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = stat_fd(&fd)?;
        let ino = self.ino_of(st.stx_ino);
        match self.nodes.get_mut(&ino) {
            // The same inode (we hold it open, so its number cannot have
            // been reused): keep our descriptor, take the newest name.
            Some(node) => {
                node.nlookup += 1;
                node.path = path.clone();
            }
            None => {
                self.nodes.insert(
                    ino,
                    Node {
                        fd,
                        path: path.clone(),
                        nlookup: 1,
                    },
                );
            }
        }
        Ok(self.attr(op, ino, &path, &st))
    }

    /// We create as root: give a new entry to a caller who is not, with
    /// the group a real file system would pick (the directory's if it is
    /// setgid).
    fn give_to_caller(&self, req: &Request<'_>, parent: u64, name: &OsStr) -> Result<(), Errno> {
        if req.uid() == self.euid && req.gid() == self.egid {
            return Ok(());
        }
        let dir = &self.node(parent)?.fd;
        let dir_st = stat_fd(dir)?;
        let gid = if u32::from(dir_st.stx_mode) & 0o2000 != 0 {
            dir_st.stx_gid
        } else {
            req.gid()
        };
        rustix::fs::chownat(
            dir,
            name,
            Some(Uid::from_raw(req.uid())),
            Some(Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    }

    /// Paths under `from` are now under `to` (and the other way round for
    /// an exchange).
    fn renamed(&mut self, from: &Path, to: &Path, exchange: bool) {
        fn moved(path: &Path, from: &Path, to: &Path) -> Option<PathBuf> {
            let rest = path.strip_prefix(from).ok()?;
            Some(if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            })
        }
        for node in self.nodes.values_mut() {
            if let Some(p) = moved(&node.path, from, to) {
                node.path = p;
            } else if exchange {
                if let Some(p) = moved(&node.path, to, from) {
                    node.path = p;
                }
            }
        }
    }

    fn apply_control(&mut self, fh: u64) -> Result<(), Errno> {
        let Some(c) = self.controls.get_mut(&fh) else {
            return Ok(());
        };
        if c.ino != RULES_INO || !c.dirty {
            return Ok(());
        }
        c.dirty = false;
        match serde_json::from_slice::<RuleSet>(&c.content) {
            Ok(set) => {
                let n = set.rules.len();
                let generation = self.faults.replace(set.rules);
                eprintln!("faultfs: rules replaced: generation {generation}, {n} rules");
                Ok(())
            }
            Err(e) => {
                eprintln!("faultfs: rules refused (the old ones stay): {e}");
                Err(Errno::INVAL)
            }
        }
    }

    fn file(&self, fh: u64) -> Result<Arc<File>, Errno> {
        self.files
            .get(&fh)
            .map(|f| f.file.clone())
            .ok_or(Errno::BADF)
    }
}

/// Reads up to `size` bytes at `offset` and applies the read rules.
fn serve_read(file: &File, faults: &Faults, path: &str, offset: u64, size: u32, reply: ReplyData) {
    let mut buf = vec![0u8; size as usize];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return reply.error(io_err(&e)),
        }
    }
    match faults.after_read(path, offset, &mut buf[..n]) {
        Ok(()) => reply.data(&buf[..n]),
        Err(e) => reply.error(err(e)),
    }
}

/// Flags for opening the backing file: ours are always direct, and a
/// /proc/self/fd link cannot be opened with O_NOFOLLOW.
fn backing_flags(flags: i32) -> OFlags {
    (OFlags::from_bits_retain(flags as u32)
        & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::DIRECT | OFlags::NOFOLLOW))
        | OFlags::CLOEXEC
}

impl Filesystem for FaultFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == FUSE_ROOT_ID && name == RULES_FILE {
            return reply.entry(&TTL, &self.control_attr(RULES_INO), 0);
        }
        if parent == FUSE_ROOT_ID && name == LOG_FILE {
            return reply.entry(&TTL, &self.control_attr(LOG_INO), 0);
        }
        let attr = tri!(reply, self.entry("lookup", parent, name));
        reply.entry(&TTL, &attr, 0);
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        if ino == FUSE_ROOT_ID {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.nlookup = node.nlookup.saturating_sub(nlookup);
            if node.nlookup == 0 {
                self.nodes.remove(&ino);
            }
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        if ino == RULES_INO || ino == LOG_INO {
            return reply.attr(&TTL, &self.control_attr(ino));
        }
        let node = tri!(reply, self.node(ino));
        let st = tri!(reply, stat_fd(&node.fd));
        reply.attr(&TTL, &self.attr("getattr", ino, &node.path, &st));
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        if ino == RULES_INO || ino == LOG_INO {
            // O_TRUNC on the rules file: a write replaces the whole
            // document anyway.
            return reply.attr(&TTL, &self.control_attr(ino));
        }
        let node = tri!(reply, self.node(ino));
        if let Some(mode) = mode {
            tri!(
                reply,
                rustix::fs::chmodat(
                    CWD,
                    proc_path(&node.fd),
                    Mode::from_raw_mode(mode),
                    AtFlags::empty()
                )
            );
        }
        if uid.is_some() || gid.is_some() {
            tri!(
                reply,
                rustix::fs::chownat(
                    &node.fd,
                    "",
                    uid.map(Uid::from_raw),
                    gid.map(Gid::from_raw),
                    AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
                )
            );
        }
        if let Some(size) = size {
            let open = fh
                .and_then(|fh| self.files.get(&fh))
                .map(|f| f.file.clone());
            let result = match open {
                Some(file) => rustix::fs::ftruncate(&*file, size),
                None => rustix::fs::open(
                    proc_path(&node.fd),
                    OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .and_then(|fd| rustix::fs::ftruncate(&fd, size)),
            };
            tri!(reply, result);
        }
        if atime.is_some() || mtime.is_some() {
            let times = Timestamps {
                last_access: timespec(atime),
                last_modification: timespec(mtime),
            };
            tri!(
                reply,
                rustix::fs::utimensat(
                    &node.fd,
                    "",
                    &times,
                    AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW
                )
            );
        }
        let st = tri!(reply, stat_fd(&node.fd));
        reply.attr(&TTL, &self.attr("setattr", ino, &node.path, &st));
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        let node = tri!(reply, self.node(ino));
        let target = tri!(reply, rustix::fs::readlinkat(&node.fd, "", Vec::new()));
        reply.data(target.as_bytes());
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        if is_control_name(parent, name) {
            return reply.error(err(Errno::EXIST));
        }
        let dir = tri!(reply, self.node(parent));
        tri!(
            reply,
            rustix::fs::mknodat(
                &dir.fd,
                name,
                rustix::fs::FileType::from_raw_mode(mode),
                Mode::from_raw_mode(mode),
                decode_dev(rdev),
            )
        );
        tri!(reply, self.give_to_caller(req, parent, name));
        let attr = tri!(reply, self.entry("mknod", parent, name));
        reply.entry(&TTL, &attr, 0);
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        if is_control_name(parent, name) {
            return reply.error(err(Errno::EXIST));
        }
        let dir = tri!(reply, self.node(parent));
        tri!(
            reply,
            rustix::fs::mkdirat(&dir.fd, name, Mode::from_raw_mode(mode))
        );
        tri!(reply, self.give_to_caller(req, parent, name));
        let attr = tri!(reply, self.entry("mkdir", parent, name));
        reply.entry(&TTL, &attr, 0);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        if is_control_name(parent, name) {
            return reply.error(err(Errno::PERM));
        }
        let dir = tri!(reply, self.node(parent));
        tri!(reply, rustix::fs::unlinkat(&dir.fd, name, AtFlags::empty()));
        reply.ok();
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let dir = tri!(reply, self.node(parent));
        tri!(
            reply,
            rustix::fs::unlinkat(&dir.fd, name, AtFlags::REMOVEDIR)
        );
        reply.ok();
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        if is_control_name(parent, link_name) {
            return reply.error(err(Errno::EXIST));
        }
        let dir = tri!(reply, self.node(parent));
        tri!(reply, rustix::fs::symlinkat(target, &dir.fd, link_name));
        tri!(reply, self.give_to_caller(req, parent, link_name));
        let attr = tri!(reply, self.entry("symlink", parent, link_name));
        reply.entry(&TTL, &attr, 0);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if is_control_name(parent, name) || is_control_name(newparent, newname) {
            return reply.error(err(Errno::PERM));
        }
        let from = tri!(reply, self.child_path(parent, name));
        let to = tri!(reply, self.child_path(newparent, newname));
        let flags = RenameFlags::from_bits_retain(flags);
        {
            let (a, b) = (
                tri!(reply, self.node(parent)),
                tri!(reply, self.node(newparent)),
            );
            tri!(
                reply,
                rustix::fs::renameat_with(&a.fd, name, &b.fd, newname, flags)
            );
        }
        self.renamed(&from, &to, flags.contains(RenameFlags::EXCHANGE));
        reply.ok();
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        if is_control_name(newparent, newname) {
            return reply.error(err(Errno::EXIST));
        }
        let (node, dir) = (
            tri!(reply, self.node(ino)),
            tri!(reply, self.node(newparent)),
        );
        // AT_EMPTY_PATH links the inode itself (we run as root, which it
        // needs): the name it was found by may be gone.
        tri!(
            reply,
            rustix::fs::linkat(&node.fd, "", &dir.fd, newname, AtFlags::EMPTY_PATH)
        );
        let attr = tri!(reply, self.entry("link", newparent, newname));
        reply.entry(&TTL, &attr, 0);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if ino == RULES_INO || ino == LOG_INO {
            let writing = flags & 0o3 != 0;
            let content = match (ino, writing) {
                (RULES_INO, true) => Vec::new(),
                (RULES_INO, false) => self.faults.rules_json(),
                (_, true) => return reply.error(err(Errno::ACCESS)),
                (_, false) => self.faults.log_text(),
            };
            let fh = self.fh();
            self.controls.insert(
                fh,
                Control {
                    ino,
                    content,
                    dirty: false,
                },
            );
            return reply.opened(fh, FOPEN_DIRECT_IO);
        }
        let path = self.path_of(ino);
        tri!(reply, self.faults.open("open", &path));
        let node = tri!(reply, self.node(ino));
        let fd = tri!(
            reply,
            rustix::fs::open(proc_path(&node.fd), backing_flags(flags), Mode::empty())
        );
        let fh = self.fh();
        self.files.insert(
            fh,
            OpenFile {
                file: Arc::new(File::from(fd)),
            },
        );
        reply.opened(fh, FOPEN_DIRECT_IO);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let offset = offset.max(0) as u64;
        if let Some(c) = self.controls.get(&fh) {
            let start = (offset as usize).min(c.content.len());
            let end = (start + size as usize).min(c.content.len());
            return reply.data(&c.content[start..end]);
        }
        let file = tri!(reply, self.file(fh));
        let path = self.path_of(ino);
        let faults = self.faults.clone();
        match faults.before_read(&path, offset) {
            Err(e) => reply.error(err(e)),
            Ok(stall) if stall.is_zero() => serve_read(&file, &faults, &path, offset, size, reply),
            Ok(stall) => {
                // The session is one thread: sleep on another, so every
                // other request (this file's too) is served meanwhile.
                std::thread::spawn(move || {
                    std::thread::sleep(stall);
                    serve_read(&file, &faults, &path, offset, size, reply);
                });
            }
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let offset = offset.max(0) as u64;
        if let Some(c) = self.controls.get_mut(&fh) {
            let start = offset as usize;
            if c.content.len() < start + data.len() {
                c.content.resize(start + data.len(), 0);
            }
            c.content[start..start + data.len()].copy_from_slice(data);
            c.dirty = true;
            return reply.written(data.len() as u32);
        }
        let file = tri!(reply, self.file(fh));
        let path = self.path_of(ino);
        let allowed = tri!(reply, self.faults.before_write(&path, offset, data.len()));
        match file.write_at(&data[..allowed], offset) {
            Ok(n) => {
                self.faults.wrote(&path, n);
                reply.written(n as u32);
            }
            Err(e) => reply.error(io_err(&e)),
        }
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        tri!(reply, self.apply_control(fh));
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let applied = self.apply_control(fh);
        self.controls.remove(&fh);
        self.files.remove(&fh);
        tri!(reply, applied);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, datasync: bool, reply: ReplyEmpty) {
        if self.controls.contains_key(&fh) {
            tri!(reply, self.apply_control(fh));
            return reply.ok();
        }
        let file = tri!(reply, self.file(fh));
        if datasync {
            tri!(reply, rustix::fs::fdatasync(&*file));
        } else {
            tri!(reply, rustix::fs::fsync(&*file));
        }
        reply.ok();
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let node = tri!(reply, self.node(ino));
        let fd = tri!(
            reply,
            rustix::fs::openat(
                &node.fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty()
            )
        );
        let mut entries = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (ino, FileType::Directory, OsString::from("..")),
        ];
        let dir = tri!(reply, rustix::fs::Dir::read_from(&fd));
        for entry in dir {
            let entry = tri!(reply, entry);
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." || is_control_name(ino, name) {
                continue;
            }
            let kind = match kind_of_dirent(entry.file_type()) {
                Some(k) => k,
                None => {
                    match rustix::fs::statx(&fd, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE)
                    {
                        Ok(st) => kind_of_mode(u32::from(st.stx_mode)),
                        Err(_) => continue,
                    }
                }
            };
            entries.push((self.ino_of(entry.ino()), kind, name.to_os_string()));
        }
        let fh = self.fh();
        self.dirs.insert(fh, OpenDir { fd, entries });
        reply.opened(fh, 0);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = self.dirs.get(&fh) else {
            return reply.error(err(Errno::BADF));
        };
        for (i, (ino, kind, name)) in dir.entries.iter().enumerate().skip(offset.max(0) as usize) {
            // The offset of an entry is where the next readdir goes on.
            if reply.add(*ino, i as i64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        self.dirs.remove(&fh);
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let Some(dir) = self.dirs.get(&fh) else {
            return reply.error(err(Errno::BADF));
        };
        if datasync {
            tri!(reply, rustix::fs::fdatasync(&dir.fd));
        } else {
            tri!(reply, rustix::fs::fsync(&dir.fd));
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // The real numbers, also under a no_space_after rule: a copy should
        // run into ENOSPC while writing, not refuse to start.
        let root = tri!(reply, self.node(FUSE_ROOT_ID));
        let s = tri!(reply, rustix::fs::fstatvfs(&root.fd));
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        );
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let path = tri!(reply, self.xattr_path(ino));
        tri!(
            reply,
            rustix::fs::setxattr(
                path,
                name,
                value,
                XattrFlags::from_bits_retain(flags as u32)
            )
        );
        reply.ok();
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let path = tri!(reply, self.xattr_path(ino));
        let mut buf = vec![0u8; 65536];
        let n = tri!(reply, rustix::fs::getxattr(path, name, &mut buf[..]));
        reply_xattr(&buf[..n], size, reply);
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let path = match self.xattr_path(ino) {
            Ok(p) => p,
            // Symlinks (and the control files) have none we show.
            Err(_) => return reply_xattr(&[], size, reply),
        };
        let mut buf = vec![0u8; 65536];
        let n = tri!(reply, rustix::fs::listxattr(path, &mut buf[..]));
        reply_xattr(&buf[..n], size, reply);
    }

    fn removexattr(&mut self, _req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        let path = tri!(reply, self.xattr_path(ino));
        tri!(reply, rustix::fs::removexattr(path, name));
        reply.ok();
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        // default_permissions: the kernel has checked already.
        reply.ok();
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if is_control_name(parent, name) {
            return reply.error(err(Errno::EXIST));
        }
        let path = tri!(reply, self.child_path(parent, name));
        tri!(reply, self.faults.open("create", &rel(&path)));
        let dir = tri!(reply, self.node(parent));
        let oflags = backing_flags(flags)
            | OFlags::CREATE
            | (OFlags::from_bits_retain(flags as u32) & OFlags::EXCL);
        let fd = tri!(
            reply,
            rustix::fs::openat(&dir.fd, name, oflags, Mode::from_raw_mode(mode))
        );
        tri!(reply, self.give_to_caller(req, parent, name));
        let attr = tri!(reply, self.entry("create", parent, name));
        let fh = self.fh();
        self.files.insert(
            fh,
            OpenFile {
                file: Arc::new(File::from(fd)),
            },
        );
        reply.created(&TTL, &attr, 0, fh, FOPEN_DIRECT_IO);
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let file = tri!(reply, self.file(fh));
        tri!(
            reply,
            rustix::fs::fallocate(
                &*file,
                FallocateFlags::from_bits_retain(mode as u32),
                offset.max(0) as u64,
                length.max(0) as u64,
            )
        );
        reply.ok();
    }

    fn lseek(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // The kernel asks only for SEEK_DATA and SEEK_HOLE (holes in sparse
        // files); the others it answers itself.
        let file = tri!(reply, self.file(fh));
        let from = match whence {
            3 => SeekFrom::Data(offset.max(0) as u64),
            4 => SeekFrom::Hole(offset.max(0) as u64),
            0 => SeekFrom::Start(offset.max(0) as u64),
            1 => SeekFrom::Current(offset),
            2 => SeekFrom::End(offset),
            _ => return reply.error(err(Errno::INVAL)),
        };
        let at = tri!(reply, rustix::fs::seek(&*file, from));
        reply.offset(at as i64);
    }
}

impl FaultFs {
    /// Where xattr calls go: the inode through /proc (an O_PATH descriptor
    /// takes no xattr calls). Not for symlinks, whose /proc link would be
    /// followed to their target.
    fn xattr_path(&self, ino: u64) -> Result<PathBuf, Errno> {
        if ino == RULES_INO || ino == LOG_INO {
            return Err(Errno::NODATA);
        }
        let node = self.node(ino)?;
        let st = stat_fd(&node.fd)?;
        if kind_of_mode(u32::from(st.stx_mode)) == FileType::Symlink {
            return Err(Errno::NODATA);
        }
        Ok(proc_path(&node.fd))
    }
}

/// Size query (size 0), the value, or ERANGE if it does not fit.
fn reply_xattr(value: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(err(Errno::RANGE));
    } else {
        reply.data(value);
    }
}

fn usage() -> ! {
    eprintln!("usage: faultfs BACKING MOUNTPOINT [--rules RULES.json] [--exit-with-parent]");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args_os().skip(1);
    let mut positional = Vec::new();
    let mut rules_file = None;
    let mut exit_with_parent = false;
    while let Some(arg) = args.next() {
        if arg == "--exit-with-parent" {
            exit_with_parent = true;
        } else if arg == "--rules" {
            rules_file = Some(args.next().unwrap_or_else(|| usage()));
        } else if arg.to_string_lossy().starts_with('-') {
            usage();
        } else {
            positional.push(PathBuf::from(arg));
        }
    }
    let [backing, mountpoint] = <[PathBuf; 2]>::try_from(positional).unwrap_or_else(|_| usage());
    let rules = match rules_file {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read(&path).unwrap_or_else(|e| {
                eprintln!("faultfs: {}: {e}", Path::new(&path).display());
                std::process::exit(1);
            });
            match serde_json::from_slice::<RuleSet>(&text) {
                Ok(set) => set.rules,
                Err(e) => {
                    eprintln!("faultfs: {}: {e}", Path::new(&path).display());
                    std::process::exit(1);
                }
            }
        }
    };
    // Modes come from the kernel with the caller's umask applied already.
    rustix::process::umask(Mode::empty());
    let root = rustix::fs::open(
        &backing,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| {
        eprintln!("faultfs: {}: {e}", backing.display());
        std::process::exit(1);
    });
    let fs = FaultFs::new(root, rules).unwrap_or_else(|e| {
        eprintln!("faultfs: {}: {e}", backing.display());
        std::process::exit(1);
    });
    eprintln!("faultfs: {} on {}", backing.display(), mountpoint.display());
    if exit_with_parent {
        // A test run killed before its FaultFs was dropped must not leave
        // us mounted: when the parent process is gone we exit, and
        // auto_unmount takes the mount down. (Not PR_SET_PDEATHSIG: that
        // fires when the spawning *thread* ends, and tests move harnesses
        // between threads.)
        let parent = rustix::process::getppid();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            if rustix::process::getppid() != parent {
                eprintln!("faultfs: parent gone, exiting");
                std::process::exit(0);
            }
        });
    }
    let options = [
        MountOption::FSName(format!("faultfs:{}", backing.display())),
        MountOption::Subtype("faultfs".into()),
        MountOption::AllowOther,
        MountOption::DefaultPermissions,
        // fusermount3 unmounts when we die, also by SIGKILL.
        MountOption::AutoUnmount,
        MountOption::RW,
    ];
    if let Err(e) = fuser::mount2(fs, &mountpoint, &options) {
        eprintln!("faultfs: mount on {}: {e}", mountpoint.display());
        std::process::exit(1);
    }
}
