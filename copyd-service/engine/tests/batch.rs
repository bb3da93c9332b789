//! A tree's small files copied through io_uring in batches (many files per
//! submission): the same bytes and metadata as the ordinary way, on ext4,
//! tmpfs and btrfs, chosen by auto where no engine would share extents,
//! errors reported as the ordinary way reports them, every open made with
//! the caller's rights, not copyd's, and the fallbacks: a kernel without
//! an operation, and a process with no room to register buffers.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{copy, copy_with, rsync_differences, small_files_tree, write_file, ScratchMount};
use copyd_engine::engines::io_uring::{BatchOp, IoUringConfig, IoUringCopier};
use copyd_engine::identity::{run_as, Credentials};
use copyd_engine::{EngineSet, ErrorKind, Options, Preserve, RouteReport};

/// The words a route report gives for files copied in batches, and for
/// batches without registered buffers.
const BATCHED: &str = "io_uring batches";
const PLAIN_BUFFERS: &str = "plain buffers";

/// Whether any route of `copied` gives a reason containing `words`.
fn routes_say(copied: &common::Copied, words: &str) -> bool {
    let routes = copied.progress.routes();
    routes
        .values()
        .any(|route: &RouteReport| route.why.iter().any(|why| why.contains(words)))
}

/// The bytes of the files of `root`'s tree that a batch takes: 1 byte to
/// 64 KiB, in directories with more than one file (a lone file is copied
/// by itself).
fn batchable_bytes(root: &Path) -> u64 {
    let mut lens = Vec::new();
    let mut bytes = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            bytes += batchable_bytes(&entry.path());
        } else if kind.is_file() {
            lens.push(entry.metadata().unwrap().len());
        }
    }
    if lens.len() > 1 {
        bytes += lens
            .iter()
            .filter(|len| (1..=64 << 10).contains(*len))
            .sum::<u64>();
    }
    bytes
}

/// A directory `tree` of `count` files named f000…, file f `len(f)` bytes
/// long, in a temporary directory anyone may enter (for jobs acting as
/// another user).
fn tree_anyone_may_read(
    count: usize,
    len: impl Fn(usize) -> usize,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    for f in 0..count {
        write_file(&tree.join(format!("f{f:03}")), len(f), f as u64);
    }
    (dir, tree)
}

fn io_uring_here() -> bool {
    let usable = EngineSet::probe().names().contains(&"io_uring");
    if !usable {
        eprintln!("SKIP: io_uring is not usable here");
    }
    usable
}

#[test]
fn a_tree_copied_in_batches_is_identical() {
    if !io_uring_here() {
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    let bytes = small_files_tree(&tree);

    let forced = dir.path().join("forced");
    let copied = copy(&tree, &forced, "io_uring", Preserve::all()).unwrap();
    assert_eq!(rsync_differences(&tree, &forced), "");
    assert_eq!(copied.engine_bytes.get("io_uring"), Some(&bytes));
    assert!(copied.outcome.failures.is_empty());

    // To a tmpfs, with the default preserve (mode, times): copies are
    // created with their final mode where the umask allows.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let to_tmpfs = shm.path().join("tree");
    let copied = copy(&tree, &to_tmpfs, "io_uring", Preserve::default()).unwrap();
    assert_eq!(rsync_differences(&tree, &to_tmpfs), "");
    assert_eq!(copied.engine_bytes.get("io_uring"), Some(&bytes));
}

/// A file only root may read, in the middle of a directory of small files,
/// copied by a job acting as an ordinary user: the batch's open must fail
/// with the user's rights (if the ring opened as root, the file would be
/// copied), the file fails alone, and the rest is copied.
#[test]
fn a_batch_opens_with_the_callers_rights() {
    if !io_uring_here() {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: needs root to act as another user");
        return;
    }
    let (dir, tree) = tree_anyone_may_read(40, |f| 1000 + f * 10);
    let secret = tree.join("f020");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let nobody = 65534;
    rustix::fs::chown(
        &out,
        Some(rustix::fs::Uid::from_raw(nobody)),
        Some(rustix::fs::Gid::from_raw(nobody)),
    )
    .unwrap();
    let creds = Credentials {
        uid: nobody,
        gid: nobody,
        groups: vec![nobody],
    };
    let options = Options {
        recursive: true,
        engine: "io_uring".into(),
        ..Options::default()
    };
    let target = out.join("tree");
    let copied = run_as(&creds, || {
        copy_with(&tree, &target, options, &EngineSet::probe())
    })
    .unwrap();
    let failures: Vec<_> = copied
        .outcome
        .failures
        .iter()
        .map(|failure| (failure.source.clone(), failure.error.kind))
        .collect();
    assert_eq!(failures, [(secret, ErrorKind::PermissionDenied)]);
    assert!(!target.join("f020").exists());
    for f in (0..40).filter(|f| *f != 20) {
        let name = format!("f{f:03}");
        assert_eq!(
            std::fs::read(tree.join(&name)).unwrap(),
            std::fs::read(target.join(&name)).unwrap()
        );
    }
    assert!(copied.engine_bytes.get("io_uring").copied().unwrap_or(0) > 0);
    // Creations are handed to the kernel's io-wq threads: they too must
    // act as the user, so the copies are the user's.
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(target.join("f000")).unwrap().uid();
    assert_eq!(owner, nobody, "a batch created a file as uid {owner}");
}

/// auto takes the small files of a tree through batches from ext4 to tmpfs
/// (different file systems: nothing could share extents) and within ext4
/// (once a clone is found unsupported), with their metadata, times and
/// modes and owners alike.
#[test]
fn auto_batches_small_files_where_nothing_shares_extents() {
    if !io_uring_here() {
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    small_files_tree(&tree);
    let small = batchable_bytes(&tree);

    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let to_tmpfs = shm.path().join("tree");
    let copied = copy(&tree, &to_tmpfs, "auto", Preserve::all()).unwrap();
    assert_eq!(rsync_differences(&tree, &to_tmpfs), "");
    assert!(
        routes_say(&copied, BATCHED),
        "{:?}",
        copied.progress.routes()
    );
    // Every small file went through a batch (none was turned back).
    assert!(copied.engine_bytes.get("io_uring").copied().unwrap_or(0) >= small);

    let on_ext4 = dir.path().join("copy");
    let copied = copy(&tree, &on_ext4, "auto", Preserve::all()).unwrap();
    assert_eq!(rsync_differences(&tree, &on_ext4), "");
    assert!(
        routes_say(&copied, BATCHED),
        "{:?}",
        copied.progress.routes()
    );
}

/// On btrfs: batches asked for by name copy the tree exactly; auto shares
/// extents (reflink) instead, and batches nothing.
#[test]
fn on_btrfs_batches_copy_exactly_and_auto_still_reflinks() {
    if !io_uring_here() {
        return;
    }
    let Some(mount) = ScratchMount::loop_fs("btrfs", 256) else {
        eprintln!("SKIP: no btrfs here");
        return;
    };
    let tree = mount.path.join("tree");
    small_files_tree(&tree);
    let small = batchable_bytes(&tree);

    let forced = mount.path.join("forced");
    let copied = copy(&tree, &forced, "io_uring", Preserve::all()).unwrap();
    assert_eq!(rsync_differences(&tree, &forced), "");
    assert!(routes_say(&copied, BATCHED));
    assert!(copied.engine_bytes.get("io_uring").copied().unwrap_or(0) >= small);

    let auto = mount.path.join("auto");
    let copied = copy(&tree, &auto, "auto", Preserve::all()).unwrap();
    assert_eq!(rsync_differences(&tree, &auto), "");
    assert!(
        !routes_say(&copied, BATCHED),
        "{:?}",
        copied.progress.routes()
    );
    assert!(copied.engine_bytes.get("reflink").copied().unwrap_or(0) > 0);
}

/// The engine as a kernel without `hidden` would give it.
fn io_uring_without(hidden: &[BatchOp]) -> EngineSet {
    let engine = IoUringCopier::probe_hiding(IoUringConfig::default(), hidden).unwrap();
    EngineSet::from_engines(vec![Box::new(engine)])
}

/// A kernel without IORING_OP_CLOSE: the batches close the copies on the
/// thread. Without IORING_OP_OPENAT: no batches; the io_uring engine
/// copies each file by itself. The copies are exact either way.
#[test]
fn a_kernel_without_an_operation_falls_back_for_that_step() {
    if !io_uring_here() {
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    small_files_tree(&tree);
    let small = batchable_bytes(&tree);
    let options = || Options {
        recursive: true,
        engine: "io_uring".into(),
        preserve: Preserve::all(),
        ..Options::default()
    };

    let no_close = io_uring_without(&[BatchOp::Close]);
    let rings = no_close.select("io_uring").unwrap()[0]
        .small_file_batches()
        .unwrap();
    assert!(!rings.ops().close_in_ring);
    let target = dir.path().join("no-close");
    let copied = copy_with(&tree, &target, options(), &no_close).unwrap();
    assert_eq!(rsync_differences(&tree, &target), "");
    assert!(routes_say(&copied, BATCHED));
    assert!(copied.engine_bytes.get("io_uring").copied().unwrap_or(0) >= small);

    let no_openat = io_uring_without(&[BatchOp::OpenAt]);
    assert!(no_openat.select("io_uring").unwrap()[0]
        .small_file_batches()
        .is_none());
    let target = dir.path().join("no-openat");
    let copied = copy_with(&tree, &target, options(), &no_openat).unwrap();
    assert_eq!(rsync_differences(&tree, &target), "");
    assert!(!routes_say(&copied, BATCHED));
    assert!(copied.engine_bytes.get("io_uring").copied().unwrap_or(0) >= small);
}

/// The environment variable that turns this test binary, run again as
/// nobody, into the child of
/// `a_process_under_the_memory_lock_limit_batches_with_plain_buffers`:
/// "SOURCE TARGET".
const CHILD: &str = "COPYD_BATCH_TEST_CHILD";

/// An ordinary user's process may lock 8 MiB (RLIMIT_MEMLOCK), shared by
/// its rings. Run for real as nobody under `prlimit --memlock`: with 8 MiB
/// the copy is exact, however the rings shared it; with 1 MiB, too little
/// for a batch ring's 2 MiB of buffers, the batches run with plain buffers,
/// the copy is exact, and its route report says so.
#[test]
fn a_process_under_the_memory_lock_limit_batches_with_plain_buffers() {
    if let Ok(paths) = std::env::var(CHILD) {
        return copy_as_the_child(&paths);
    }
    if !io_uring_here() {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: needs root to run a child as nobody");
        return;
    }
    let (dir, tree) = tree_anyone_may_read(100, |f| 100 + f * 531);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let nobody = rustix::fs::Uid::from_raw(65534);
    rustix::fs::chown(&out, Some(nobody), None).unwrap();
    // The test binary, where nobody may run it.
    let exe = dir.path().join("batch-test");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    for (limit, expect_plain) in [(8 << 20, false), (1 << 20, true)] {
        let target = out.join(format!("tree-{limit}"));
        let child = std::process::Command::new("prlimit")
            .arg(format!("--memlock={limit}:{limit}"))
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ])
            .arg(&exe)
            .args([
                "--exact",
                "a_process_under_the_memory_lock_limit_batches_with_plain_buffers",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD,
                format!(
                    "{} {} {limit} {expect_plain}",
                    tree.display(),
                    target.display()
                ),
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&child.stdout);
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert!(child.status.success(), "child: {stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test: {stdout}"
        );
        // Contents, modes and times alike; the owner is nobody, who made
        // the copy.
        let differences = std::process::Command::new("rsync")
            .args(["-nrlptX", "--checksum", "--itemize-changes"])
            .arg(format!("{}/", tree.display()))
            .arg(format!("{}/", target.display()))
            .output()
            .unwrap();
        assert!(differences.status.success());
        assert_eq!(String::from_utf8_lossy(&differences.stdout), "");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(target.join("f000")).unwrap().uid(), 65534);
    }
}

/// The child's side: as nobody, with LIMIT bytes lockable, copy SOURCE to
/// TARGET by io_uring in batches, with plain buffers if EXPECT_PLAIN.
fn copy_as_the_child(args: &str) {
    let args: Vec<&str> = args.split(' ').collect();
    let [source, target, limit, expect_plain] = args[..] else {
        panic!("{CHILD}: {args:?}");
    };
    assert!(!rustix::process::geteuid().is_root());
    let lockable = rustix::process::getrlimit(rustix::process::Resource::Memlock);
    assert_eq!(lockable.current, Some(limit.parse().unwrap()));
    let options = Options {
        recursive: true,
        engine: "io_uring".into(),
        ..Options::default()
    };
    let copied = copy_with(
        Path::new(source),
        Path::new(target),
        options,
        &EngineSet::probe(),
    )
    .unwrap();
    assert!(
        copied.outcome.failures.is_empty(),
        "{:?}",
        copied.outcome.failures
    );
    assert!(
        routes_say(&copied, BATCHED),
        "{:?}",
        copied.progress.routes()
    );
    if expect_plain == "true" {
        assert!(
            routes_say(&copied, PLAIN_BUFFERS),
            "{:?}",
            copied.progress.routes()
        );
    }
}
