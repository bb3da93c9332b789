//! Metadata a copy carries over: mode (and when setuid survives), owner,
//! times to the nanosecond, extended attributes and ACLs, hard links.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{
    as_ordinary_user, copy, output, set_odd_times, write_file, ScratchMount, ORDINARY_USER,
};
use copyd_engine::Preserve;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn stat_line(path: &Path) -> String {
    output(
        "stat",
        &["-c".as_ref(), "%a %u %g %X %Y".as_ref(), path.as_os_str()],
    )
}

/// Attributes by `getfattr -d -m -` (all namespaces), without the header
/// line naming the file.
fn xattrs(path: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "--absolute-names"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("# file:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn run(program: &str, args: &[&str], path: &Path) {
    let status = Command::new(program).args(args).arg(path).status().unwrap();
    assert!(status.success(), "{program} {args:?} {}", path.display());
}

/// The times `set_odd_times` gave. Compared with these rather than with
/// the source after the copy: reading the source moves its atime
/// (relatime), as it does for `cp -p`.
fn has_odd_times(path: &Path) {
    let meta = fs::symlink_metadata(path).unwrap();
    assert_eq!(
        (meta.atime(), meta.atime_nsec()),
        (1_000_000_000, 123_456_789),
        "atime of {}",
        path.display()
    );
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_200_000_000, 987_654_321),
        "mtime of {}",
        path.display()
    );
}

/// A source file with everything set: setuid, a foreign owner, an xattr,
/// an ACL, odd times.
fn rich_file(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("rich");
    write_file(&source, 10_000, 7);
    run("setfattr", &["-n", "user.copyd", "-v", "kept"], &source);
    run("setfacl", &["-m", "u:4321:r--"], &source);
    if is_root() {
        rustix::fs::chown(
            &source,
            Some(rustix::fs::Uid::from_raw(1234)),
            Some(rustix::fs::Gid::from_raw(5678)),
        )
        .unwrap();
    }
    fs::set_permissions(&source, fs::Permissions::from_mode(0o4750)).unwrap();
    set_odd_times(&source);
    source
}

fn everything_is_kept_in(src_dir: &Path, dst_dir: &Path) {
    let source = rich_file(src_dir);
    let before = stat_line(&source);
    let target = dst_dir.join("rich-copy");
    copy(&source, &target, "auto", Preserve::all()).unwrap();
    assert_eq!(before, stat_line(&target));
    has_odd_times(&target);
    let attrs = xattrs(&source);
    assert!(
        attrs.contains("user.copyd=\"kept\"") && attrs.contains("system.posix_acl_access"),
        "{attrs}"
    );
    assert_eq!(attrs, xattrs(&target));
    if is_root() {
        // Root keeping the owner keeps setuid too.
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o4750);
    }
}

#[test]
fn everything_is_kept_on_ext4() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    everything_is_kept_in(dir.path(), dir.path());
}

#[test]
fn everything_is_kept_from_ext4_to_tmpfs() {
    let (src, dst) = (
        tempfile::tempdir_in("/tmp").unwrap(),
        tempfile::tempdir_in("/dev/shm").unwrap(),
    );
    everything_is_kept_in(src.path(), dst.path());
}

#[test]
fn everything_is_kept_on_xfs() {
    let Some(mount) = ScratchMount::loop_fs("xfs", 300) else {
        return;
    };
    everything_is_kept_in(&mount.path, &mount.path);
}

/// By default (mode and times), setuid is dropped and the copy belongs to
/// whoever copied; no xattrs come along.
#[test]
fn by_default_setuid_and_owner_and_xattrs_stay_behind() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = rich_file(dir.path());
    let target = dir.path().join("plain-copy");
    copy(&source, &target, "auto", Preserve::default()).unwrap();
    let meta = fs::metadata(&target).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o750);
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
    has_odd_times(&target);
    assert_eq!(xattrs(&target), "");
}

/// Directories and symlinks get owner, xattrs (a default ACL on the
/// directory) and times; directory times survive the entries made in them.
#[test]
fn directories_and_symlinks_keep_theirs() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    write_file(&tree.join("sub/file"), 100, 1);
    std::os::unix::fs::symlink("sub/file", tree.join("link")).unwrap();
    run("setfacl", &["-d", "-m", "u:4321:rwx"], &tree.join("sub"));
    run(
        "setfattr",
        &["-n", "user.dir", "-v", "yes"],
        &tree.join("sub"),
    );
    fs::set_permissions(tree.join("sub"), fs::Permissions::from_mode(0o2751)).unwrap();
    if is_root() {
        let (uid, gid) = (
            Some(rustix::fs::Uid::from_raw(99)),
            Some(rustix::fs::Gid::from_raw(98)),
        );
        rustix::fs::chownat(
            rustix::fs::CWD,
            tree.join("link"),
            uid,
            gid,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        rustix::fs::chown(tree.join("sub"), uid, gid).unwrap();
    }
    for path in ["sub/file", "link", "sub", ""] {
        set_odd_times(&tree.join(path));
    }
    let target = dir.path().join("copy");
    copy(&tree, &target, "auto", Preserve::all()).unwrap();
    for path in ["sub/file", "link", "sub", ""] {
        let (a, b) = (tree.join(path), target.join(path));
        has_odd_times(&b);
        let (ma, mb) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap(),
        );
        assert_eq!(
            (ma.mode(), ma.uid(), ma.gid()),
            (mb.mode(), mb.uid(), mb.gid()),
            "{path}"
        );
        assert_eq!(xattrs(&a), xattrs(&b), "{path}");
    }
    assert!(xattrs(&target.join("sub")).contains("system.posix_acl_default"));
}

/// Names of one inode stay one inode in the copy with preserve links; a
/// file whose other name is outside the tree is an ordinary copy.
#[test]
fn hard_links_inside_the_tree_stay_links() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("a/b")).unwrap();
    write_file(&tree.join("one"), 50_000, 1);
    fs::hard_link(tree.join("one"), tree.join("a/two")).unwrap();
    fs::hard_link(tree.join("one"), tree.join("a/b/three")).unwrap();
    write_file(&tree.join("lonely"), 10, 2);
    fs::hard_link(tree.join("lonely"), dir.path().join("outside")).unwrap();

    let linked = dir.path().join("linked");
    let copied = copy(&tree, &linked, "auto", Preserve::all()).unwrap();
    let ino = |p: &str| fs::metadata(linked.join(p)).unwrap().ino();
    assert_eq!(ino("one"), ino("a/two"));
    assert_eq!(ino("one"), ino("a/b/three"));
    assert_eq!(fs::metadata(linked.join("one")).unwrap().nlink(), 3);
    assert_eq!(fs::metadata(linked.join("lonely")).unwrap().nlink(), 1);
    assert_eq!(
        fs::read(linked.join("a/b/three")).unwrap(),
        fs::read(tree.join("one")).unwrap()
    );
    let snap = copied.progress.snapshot();
    assert_eq!(
        (snap.bytes_done, snap.files_done),
        (snap.bytes_total, snap.files_total)
    );
    // Only one of the three names cost a copy.
    assert_eq!(copied.engine_bytes.values().sum::<u64>(), 50_010);

    let separate = dir.path().join("separate");
    copy(&tree, &separate, "auto", Preserve::default()).unwrap();
    let ino = |p: &str| fs::metadata(separate.join(p)).unwrap().ino();
    assert_ne!(ino("one"), ino("a/two"));
}

/// Names of one inode given as separate sources (`cp -a a b tree dir/`,
/// with a, b and tree/c one file) stay one inode in the copy, also when a
/// lone name is given after a tree holding another; without preserve links
/// they are separate copies.
#[test]
fn hard_links_across_items_stay_links() {
    use copyd_engine::{resolve, run, Control, EngineSet, Operation, Options, Progress, Request};
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let src = dir.path().join("src");
    common::hard_linked_sources(&src);
    let copy = |preserve: Preserve, into: &str| {
        let dst = dir.path().join(into);
        fs::create_dir(&dst).unwrap();
        let resolved = resolve(Request {
            operation: Operation::Copy,
            sources: ["a", "b", "tree", "e"]
                .iter()
                .map(|n| src.join(n))
                .collect(),
            destination: dst.clone(),
            options: Options {
                recursive: true,
                preserve,
                ..Options::default()
            },
        })
        .unwrap();
        let progress = Progress::new();
        run(
            &resolved,
            &EngineSet::probe(),
            "test",
            &progress,
            &Control::default(),
        )
        .unwrap();
        let snap = progress.snapshot();
        assert_eq!(
            (snap.bytes_done, snap.files_done),
            (snap.bytes_total, snap.files_total)
        );
        (dst, progress.engine_bytes().values().sum::<u64>())
    };
    let (linked, copied_bytes) = copy(Preserve::all(), "linked");
    let ino = |p: &str| fs::metadata(linked.join(p)).unwrap().ino();
    assert_eq!(ino("a"), ino("b"));
    assert_eq!(ino("a"), ino("tree/c"));
    assert_eq!(ino("tree/d"), ino("e"));
    assert_eq!(fs::metadata(linked.join("a")).unwrap().nlink(), 3);
    assert_eq!(
        fs::read(linked.join("b")).unwrap(),
        fs::read(src.join("a")).unwrap()
    );
    // Each inode cost one copy.
    assert_eq!(copied_bytes, 70_500);

    let (separate, copied_bytes) = copy(Preserve::default(), "separate");
    let ino = |p: &str| fs::metadata(separate.join(p)).unwrap().ino();
    assert_ne!(ino("a"), ino("b"));
    assert_eq!(copied_bytes, 3 * 70_000 + 2 * 500);
}

/// Without root, chown to someone else fails with EPERM: the copy goes on
/// with the caller as owner, as `cp -p` does, and never keeps setuid. The
/// test thread drops to an ordinary uid the way copyd's workers do
/// (per-thread credentials); the engine's own worker threads inherit them.
#[test]
fn an_unprivileged_copy_keeps_going_without_the_owner() {
    use rustix::fs::{Gid, Uid};
    if !is_root() {
        eprintln!("SKIP: needs root to switch to another user");
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    for name in ["suid", "other"] {
        let path = tree.join(name);
        write_file(&path, 3000, 1);
        rustix::fs::chown(&path, Some(Uid::from_raw(1234)), Some(Gid::from_raw(5678))).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o4755)).unwrap();
    }
    let target = dir.path().join("copy");
    as_ordinary_user(|| {
        let options = copyd_engine::Options {
            recursive: true,
            preserve: Preserve::all(),
            workers: 2,
            ..Default::default()
        };
        common::copy_with(&tree, &target, options, &copyd_engine::EngineSet::probe()).unwrap();
    });
    for name in ["suid", "other"] {
        let meta = fs::metadata(target.join(name)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (ORDINARY_USER, ORDINARY_USER),
            "{name}: the caller owns the copy"
        );
        assert_eq!(
            meta.mode() & 0o7777,
            0o755,
            "{name}: setuid must go with the owner"
        );
    }
    assert_eq!(fs::metadata(&target).unwrap().uid(), ORDINARY_USER);
}

#[test]
fn setuid_survives_only_with_the_owner_and_root() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("suid");
    File::create(&source).unwrap();
    fs::set_permissions(&source, fs::Permissions::from_mode(0o6755)).unwrap();
    let meta = fs::metadata(&source).unwrap();
    assert_eq!(copyd_engine::metadata::copy_mode_owned(&meta, false), 0o755);
    assert_eq!(copyd_engine::metadata::copy_mode(&meta), 0o755);
    if is_root() {
        assert_eq!(copyd_engine::metadata::copy_mode_owned(&meta, true), 0o6755);
    }
}
