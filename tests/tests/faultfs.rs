//! faultfs on its own, without copyd: it passes ordinary I/O through
//! unchanged, and each kind of rule does what it says, seen through plain
//! system calls (std, and rustix where std would retry or hide an error).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use copyd_tests::cmd::run;
use copyd_tests::faultfs::{FaultFs, Op, Rule, SizeChange, Times, ALL, LOG_FILE, RULES_FILE};
use copyd_tests::tree;
use rustix::io::Errno;

/// A mount over a fresh backing directory. Fields drop in order: the
/// mount first, then the directory under it.
struct World {
    fs: FaultFs,
    _backing: tempfile::TempDir,
}

impl World {
    fn new() -> Option<World> {
        let backing = copyd_tests::scratch_dir("faultfs-backing");
        let fs = FaultFs::mount_or_skip(backing.path())?;
        Some(World {
            fs,
            _backing: backing,
        })
    }

    /// A path under the mount.
    fn m(&self, rel: &str) -> PathBuf {
        self.fs.path().join(rel)
    }

    /// A path in the backing directory (no faults).
    fn b(&self, rel: &str) -> PathBuf {
        self.fs.backing().join(rel)
    }

    /// `len` patterned bytes written straight to the backing file.
    fn backing_file(&self, rel: &str, len: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let path = self.b(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, &data).unwrap();
        data
    }
}

fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

#[track_caller]
fn assert_errno<T: std::fmt::Debug>(r: std::io::Result<T>, want: Errno) {
    match r {
        Err(e) => assert_eq!(errno_of(&e), Some(want.raw_os_error()), "{e}"),
        Ok(v) => panic!("expected {want:?}, got Ok({v:?})"),
    }
}

#[test]
fn a_tree_copied_in_and_out_is_byte_identical() {
    let Some(w) = World::new() else { return };
    let src = copyd_tests::scratch_dir("faultfs-src");
    let stats = tree::make_tree(&src.path().join("t"), 60, 16);
    assert_eq!((stats.files, stats.symlinks), (64, 2));
    // In: cp -a creates, writes, renames nothing but sets modes, times and
    // symlinks; the backing directory must end up with the same tree.
    tree::reference_copy(&src.path().join("t"), &w.m("t"));
    tree::assert_trees_equal(&src.path().join("t"), &w.m("t"));
    tree::assert_trees_equal(&src.path().join("t"), &w.b("t"));
    // Out again, and a rename of a directory in between: paths below it
    // keep working.
    fs::rename(w.m("t"), w.m("moved")).unwrap();
    let out = copyd_tests::scratch_dir("faultfs-out");
    tree::reference_copy(&w.m("moved"), &out.path().join("t"));
    tree::assert_trees_equal(&src.path().join("t"), &out.path().join("t"));
    let mtime = |p: &Path| fs::symlink_metadata(p).unwrap().mtime();
    let some_file = w.m("moved/a/b");
    assert_eq!(mtime(&some_file), mtime(&src.path().join("t/a/b")));
    // And away: rm -r through the mount empties the backing directory.
    fs::remove_dir_all(w.m("moved")).unwrap();
    assert!(tree::dir_names(w.fs.backing()).is_empty());
}

#[test]
fn temporaries_renamed_over_fsynced_truncated_and_linked_behave() {
    let Some(w) = World::new() else { return };
    // What copyd does: write a temporary, ftruncate, fchmod, futimens,
    // fdatasync, rename over the target.
    fs::write(w.m("target"), b"old contents").unwrap();
    let tmp = w.m(".copyd-1-0.tmp");
    let mut f = File::create(&tmp).unwrap();
    f.write_all(b"new contents, longer than before").unwrap();
    f.set_len(12).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o640))
        .unwrap();
    let when = std::time::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    f.set_times(fs::FileTimes::new().set_modified(when).set_accessed(when))
        .unwrap();
    f.sync_data().unwrap();
    drop(f);
    fs::rename(&tmp, w.m("target")).unwrap();
    assert_eq!(fs::read(w.m("target")).unwrap(), b"new contents");
    assert_eq!(fs::read(w.b("target")).unwrap(), b"new contents");
    let md = fs::metadata(w.m("target")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o640);
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000_000, 123_456_789));
    assert!(!tmp.exists() && !w.b(".copyd-1-0.tmp").exists());
    // Hard links are one inode, through the mount as below it.
    fs::hard_link(w.m("target"), w.m("link")).unwrap();
    let (a, b) = (
        fs::metadata(w.m("target")).unwrap(),
        fs::metadata(w.m("link")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(a.ino(), fs::metadata(w.b("target")).unwrap().ino());
    // A file unlinked while open stays readable.
    let f = File::open(w.m("link")).unwrap();
    fs::remove_file(w.m("link")).unwrap();
    fs::remove_file(w.m("target")).unwrap();
    let mut buf = [0u8; 3];
    assert_eq!(f.read_at(&mut buf, 4).unwrap(), 3);
    assert_eq!(&buf, b"con");
    // Symlinks, directories, xattrs.
    std::os::unix::fs::symlink("some/where", w.m("sym")).unwrap();
    assert_eq!(fs::read_link(w.m("sym")).unwrap(), Path::new("some/where"));
    fs::create_dir(w.m("dir")).unwrap();
    fs::write(w.m("dir/x"), b"x").unwrap();
    run(Command::new("setfattr")
        .args(["-n", "user.copyd", "-v", "yes"])
        .arg(w.m("dir/x")))
    .assert_success();
    let got = run(Command::new("getfattr")
        .args(["-n", "user.copyd", "--only-values"])
        .arg(w.b("dir/x")));
    assert_eq!(got.assert_success().stdout_str(), "yes");
    assert_errno(fs::remove_dir(w.m("dir")), Errno::NOTEMPTY);
}

#[test]
fn files_a_user_creates_are_theirs_and_permissions_hold() {
    let Some(w) = World::new() else { return };
    fs::create_dir(w.m("shared")).unwrap();
    fs::set_permissions(w.m("shared"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(w.m("shared/secret"), b"root only").unwrap();
    fs::set_permissions(w.m("shared/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    let as_nobody = |args: &[&std::ffi::OsStr]| {
        run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args))
    };
    let mine = w.m("shared/mine");
    as_nobody(&["touch".as_ref(), mine.as_os_str()]).assert_success();
    let md = fs::metadata(w.b("shared/mine")).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 65534));
    // default_permissions: the kernel refuses with the modes we report.
    let secret = w.m("shared/secret");
    as_nobody(&["cat".as_ref(), secret.as_os_str()]).assert_failure();
}

#[test]
fn control_files_are_hidden_from_readdir_but_there() {
    let Some(w) = World::new() else { return };
    fs::write(w.b("visible"), b"v").unwrap();
    assert_eq!(
        tree::dir_names(w.fs.path()),
        vec![std::ffi::OsString::from("visible")]
    );
    assert!(w.m(RULES_FILE).is_file() && w.m(LOG_FILE).is_file());
    assert!(w.fs.rules().is_empty());
    assert!(w.fs.log_all().is_empty());
}

#[test]
fn read_error_once_then_the_same_read_succeeds() {
    let Some(w) = World::new() else { return };
    let data = w.backing_file("disk.img", 64 * 1024);
    w.fs.set_rules(&[Rule::read_error("disk.img", 10_000, Errno::IO, Times::Once)]);
    let f = File::open(w.m("disk.img")).unwrap();
    let mut buf = vec![0u8; 4096];
    // A read that does not cover the offset is served.
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 4096);
    assert_eq!(buf, data[..4096]);
    assert_errno(f.read_at(&mut buf, 8192), Errno::IO);
    assert_eq!(f.read_at(&mut buf, 8192).unwrap(), 4096);
    assert_eq!(buf, data[8192..8192 + 4096]);
    let log = w.fs.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (
            log[0].fault.as_str(),
            log[0].op.as_str(),
            log[0].path.as_str()
        ),
        ("read_error", "read", "disk.img")
    );
    assert_eq!((log[0].offset, log[0].errno), (Some(8192), Some(5)));
}

#[test]
fn read_error_always_fails_every_read_over_the_offset() {
    let Some(w) = World::new() else { return };
    let data = w.backing_file("d/bad.bin", 100_000);
    // A glob: any bad.bin anywhere.
    w.fs.set_rules(&[Rule::read_error(
        "*bad.bin",
        70_000,
        Errno::IO,
        Times::Always,
    )]);
    for _ in 0..3 {
        assert_errno(fs::read(w.m("d/bad.bin")), Errno::IO);
    }
    let f = File::open(w.m("d/bad.bin")).unwrap();
    let mut buf = vec![0u8; 60_000];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, data[..60_000]);
    assert!(w.fs.log().len() >= 3);
    assert!(w.fs.log().iter().all(|i| i.errno == Some(5)));
}

#[test]
fn transient_errors_come_the_first_n_times_then_data() {
    let Some(w) = World::new() else { return };
    let data = w.backing_file("flaky", 10_000);
    w.fs.set_rules(&[
        Rule::transient("flaky", Op::Read, Errno::INTR, 2),
        Rule::transient("flaky2", Op::Open, Errno::AGAIN, 2),
        Rule::transient("flaky3", Op::Open, Errno::INTR, 1),
        Rule::transient("out", Op::Write, Errno::AGAIN, 1),
    ]);
    // read_at is one pread: std does not retry EINTR there.
    let f = File::open(w.m("flaky")).unwrap();
    let mut buf = vec![0u8; 10_000];
    for _ in 0..2 {
        let e = f.read_at(&mut buf, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Interrupted);
    }
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 10_000);
    assert_eq!(buf, data);
    // open: EAGAIN twice (std does not retry that), then it opens.
    w.backing_file("flaky2", 10);
    assert_errno(File::open(w.m("flaky2")), Errno::AGAIN);
    assert_errno(File::open(w.m("flaky2")), Errno::AGAIN);
    File::open(w.m("flaky2")).unwrap();
    // EINTR on open, with rustix, which does not retry either (std would).
    w.backing_file("flaky3", 10);
    let open = || {
        rustix::fs::open(
            w.m("flaky3"),
            rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
    };
    assert_eq!(open().unwrap_err(), Errno::INTR);
    open().unwrap();
    // write: EAGAIN once; nothing written by the failed call.
    let out = File::create(w.m("out")).unwrap();
    assert_eq!(
        out.write_at(b"abc", 0).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert_eq!(out.write_at(b"abc", 0).unwrap(), 3);
    assert_eq!(fs::read(w.b("out")).unwrap(), b"abc");
    let log = w.fs.log();
    let count = |path: &str| log.iter().filter(|i| i.path == path).count();
    assert_eq!(
        (
            count("flaky"),
            count("flaky2"),
            count("flaky3"),
            count("out")
        ),
        (2, 2, 1, 1)
    );
}

#[test]
fn a_stalled_read_waits_while_other_files_are_served() {
    let Some(w) = World::new() else { return };
    let slow = w.backing_file("slow.bin", 8192);
    let fast = w.backing_file("fast.bin", 8192);
    w.fs.set_rules(&[Rule::stall("slow.bin", 2.0).times(Times::Once)]);
    let path = w.m("slow.bin");
    let reader = std::thread::spawn(move || {
        let t = Instant::now();
        let got = fs::read(path).unwrap();
        (t.elapsed(), got)
    });
    // Let the slow read reach faultfs and start sleeping.
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.fs.log().is_empty() {
        assert!(Instant::now() < deadline, "the stall never fired");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    assert_eq!(fs::read(w.m("fast.bin")).unwrap(), fast);
    // The stalled file itself is usable meanwhile too (stat, another read).
    assert_eq!(fs::metadata(w.m("slow.bin")).unwrap().len(), 8192);
    assert_eq!(fs::read(w.m("slow.bin")).unwrap(), slow);
    let others = t.elapsed();
    assert!(!reader.is_finished(), "the stalled read ended early");
    let (waited, got) = reader.join().unwrap();
    assert_eq!(got, slow);
    assert!(waited >= Duration::from_secs(2), "waited only {waited:?}");
    assert!(
        others < Duration::from_secs(1),
        "other reads took {others:?}"
    );
    assert_eq!(w.fs.log().len(), 1);
}

#[test]
fn a_wrong_size_shows_in_metadata() {
    let Some(w) = World::new() else { return };
    w.backing_file("grow", 1000);
    w.backing_file("shrink", 1000);
    w.backing_file("fixed", 1000);
    w.fs.set_rules(&[
        Rule::wrong_size("grow", SizeChange::Delta(100)),
        Rule::wrong_size("shrink", SizeChange::Delta(-10)),
        Rule::wrong_size("fixed", SizeChange::Absolute(3)),
    ]);
    assert_eq!(fs::metadata(w.m("grow")).unwrap().len(), 1100);
    assert_eq!(fs::metadata(w.m("shrink")).unwrap().len(), 990);
    assert_eq!(fs::metadata(w.m("fixed")).unwrap().len(), 3);
    // Through an open file too (fstat).
    assert_eq!(
        File::open(w.m("grow")).unwrap().metadata().unwrap().len(),
        1100
    );
    assert_eq!(fs::metadata(w.b("grow")).unwrap().len(), 1000);
    let mut faults: Vec<String> = w.fs.log().into_iter().map(|i| i.path).collect();
    faults.sort();
    assert_eq!(faults, ["fixed", "grow", "shrink"]);
    // Rules gone, sizes true again at once (no attribute cache).
    w.fs.clear_rules();
    assert_eq!(fs::metadata(w.m("grow")).unwrap().len(), 1000);
}

#[test]
fn no_space_after_n_bytes_per_file_and_for_all() {
    let Some(w) = World::new() else { return };
    w.fs.set_rules(&[Rule::nospc_after("out.bin", 10_000)]);
    let f = File::create(w.m("out.bin")).unwrap();
    let chunk = vec![7u8; 4096];
    assert_eq!(f.write_at(&chunk, 0).unwrap(), 4096);
    assert_eq!(f.write_at(&chunk, 4096).unwrap(), 4096);
    // The write that crosses the limit is short, as on a full disk.
    assert_eq!(f.write_at(&chunk, 8192).unwrap(), 10_000 - 8192);
    assert_errno(f.write_at(&chunk, 10_000), Errno::NOSPC);
    assert_eq!(fs::metadata(w.b("out.bin")).unwrap().len(), 10_000);
    // Other files are not limited by that rule.
    fs::write(w.m("other.bin"), vec![1u8; 20_000]).unwrap();
    assert_eq!(w.fs.log().len(), 1);

    // File-system wide: all files together.
    w.fs.set_rules(&[Rule::nospc_after(ALL, 10_000)]);
    fs::write(w.m("a"), vec![1u8; 6000]).unwrap();
    let mut b = File::create(w.m("b")).unwrap();
    let e = b.write_all(&[2u8; 6000]).unwrap_err();
    assert_eq!(errno_of(&e), Some(Errno::NOSPC.raw_os_error()));
    assert_eq!(fs::metadata(w.b("b")).unwrap().len(), 4000);
    let log = w.fs.log();
    assert_eq!((log.len(), log[0].path.as_str()), (1, "b"));
}

#[test]
fn write_error_at_an_offset() {
    let Some(w) = World::new() else { return };
    w.fs.set_rules(&[Rule::write_error("w", 5000, Errno::IO, Times::Once)]);
    let f = File::create(w.m("w")).unwrap();
    assert_eq!(f.write_at(&[1u8; 4096], 0).unwrap(), 4096);
    assert_errno(f.write_at(&[2u8; 4096], 4096), Errno::IO);
    assert_eq!(fs::metadata(w.b("w")).unwrap().len(), 4096);
    assert_eq!(f.write_at(&[2u8; 4096], 4096).unwrap(), 4096);
    assert_eq!(fs::metadata(w.b("w")).unwrap().len(), 8192);
}

#[test]
fn a_flipped_byte_is_seen_on_read_back_after_dontneed() {
    let Some(w) = World::new() else { return };
    w.fs.set_rules(&[Rule::flip_byte("dst/copy", 4097)]);
    fs::create_dir(w.m("dst")).unwrap();
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    // As copyd verifies: write, fdatasync, drop the cache, read back.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(w.m("dst/copy"))
        .unwrap();
    f.write_all(&data).unwrap();
    f.sync_data().unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let mut back = vec![0u8; data.len()];
    f.read_exact_at(&mut back, 0).unwrap();
    let diff: Vec<usize> = (0..data.len()).filter(|&i| back[i] != data[i]).collect();
    assert_eq!(diff, [4097]);
    assert_eq!(back[4097], data[4097] ^ 0xff);
    // Only what the read returns: the file itself is intact.
    assert_eq!(fs::read(w.b("dst/copy")).unwrap(), data);
    // A read that does not cover the offset sees nothing wrong.
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, data[..4096]);
    assert!(!w.fs.log().is_empty());
}

#[test]
fn rules_replaced_at_run_time_restart_counts_and_the_log() {
    // Rules from the mount on (generation 0).
    let backing = copyd_tests::scratch_dir("faultfs-backing");
    let a: Vec<u8> = vec![b'a'; 5000];
    fs::write(backing.path().join("a"), &a).unwrap();
    fs::write(backing.path().join("b"), &a).unwrap();
    let rules = [Rule::read_error("a", 0, Errno::IO, Times::Once)];
    let Some(fs_) = FaultFs::mount_with_or_skip(backing.path(), &rules) else {
        return;
    };
    assert_eq!(fs_.generation(), 0);
    assert_errno(fs::read(fs_.path().join("a")), Errno::IO);
    assert_eq!(fs::read(fs_.path().join("a")).unwrap(), a);
    // The same rule again: its count starts over.
    let once = Rule::read_error("a", 0, Errno::IO, Times::Once);
    fs_.set_rules(std::slice::from_ref(&once));
    assert_eq!(fs_.generation(), 1);
    assert_eq!(fs_.rules(), [once]);
    assert!(
        fs_.log().is_empty(),
        "the log of a new rule set starts empty"
    );
    assert_errno(fs::read(fs_.path().join("a")), Errno::IO);
    assert_eq!(fs::read(fs_.path().join("a")).unwrap(), a);
    // Different rules: the old ones are gone.
    fs_.set_rules(&[Rule::flip_byte("b", 0)]);
    assert_eq!(fs::read(fs_.path().join("a")).unwrap(), a);
    assert_eq!(fs::read(fs_.path().join("b")).unwrap()[0], b'a' ^ 0xff);
    let all = fs_.log_all();
    let per_generation: Vec<u64> = all.iter().map(|i| i.generation).collect();
    assert_eq!(per_generation, [0, 1, 2]);
    // A document faultfs cannot parse is refused, and the rules stay.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(fs_.path().join(RULES_FILE))
        .unwrap();
    f.write_all(b"{\"rules\": [{\"fault\": \"no_such_fault\"}]}")
        .unwrap();
    assert_errno(f.sync_all(), Errno::INVAL);
    drop(f);
    assert_eq!(fs_.rules(), [Rule::flip_byte("b", 0)]);
    assert_eq!(fs_.generation(), 2);
    // Plain shell works too: echo > .faultfs-rules applies on close.
    run(Command::new("sh").arg("-c").arg(format!(
        "echo '{{\"rules\": []}}' > {}",
        fs_.path().join(RULES_FILE).display()
    )))
    .assert_success();
    assert_eq!((fs_.generation(), fs_.rules().len()), (3, 0));
    drop(fs_);
}
