//! Verification (the `verify` option) on real file systems, with real
//! tools as the judges: every digest the engine records must be what
//! `sha256sum`, `md5sum` or Python's `zlib.crc32` say of the source and of
//! the copy, whichever engine moved the bytes, and whatever the file's
//! shape (empty, one byte, odd-sized, sparse, 2 GiB, resumed half-way).

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{copy_with, physical_extents, write_file, Copied, Recorder, ScratchMount};
use copyd_engine::fsutil::temp_path;
use copyd_engine::{
    resolve, run, run_resumable, Control, EngineSet, ErrorKind, FileIdentity, Operation, Options,
    Outcome, Progress, Request, ResumeState, Verify,
};

const MIB: u64 = 1 << 20;

/// The methods that take a digest.
const DIGESTS: [Verify; 3] = [Verify::Crc32, Verify::Md5, Verify::Sha256];

/// Empty, one byte, and just past a MiB (a large file, copied whole, whose
/// last chunk is one byte).
const SIZES: [usize; 3] = [0, 1, (1 << 20) + 1];

/// The engines that never have the bytes in user space.
const OFFLOADERS: [&str; 2] = ["splice", "copy_file_range"];

/// Python's zlib.crc32 of each file named, as `%08x name` lines (the same
/// CRC-32 as `cksum -a crc32b`, which Debian 12's coreutils lacks).
const CRC32: &str = "import sys, zlib
for name in sys.argv[1:]:
    crc = 0
    with open(name, 'rb') as f:
        for block in iter(lambda: f.read(1 << 22), b''):
            crc = zlib.crc32(block, crc)
    print('%08x' % crc, name)";

fn options(engine: &str, verify: Verify) -> Options {
    Options {
        recursive: true,
        engine: engine.into(),
        verify,
        ..Options::default()
    }
}

/// The real tool of `method`, started on `paths` (one process for all).
fn start_tool(method: Verify, paths: &[&Path]) -> Child {
    let mut command = match method {
        Verify::Sha256 => Command::new("sha256sum"),
        Verify::Md5 => Command::new("md5sum"),
        Verify::Crc32 => {
            let mut python = Command::new("python3");
            python.args(["-c", CRC32]);
            python
        }
        other => panic!("{other:?} takes no digest"),
    };
    command
        .args(paths)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the digest tools (sha256sum, md5sum, python3)")
}

/// What a started tool printed: one digest per path, in order.
fn tool_output(child: Child, count: usize) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a digest tool failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let digests: Vec<String> = text
        .lines()
        .map(|line| line.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(digests.len(), count, "{text}");
    digests
}

/// What the real tool of `method` says of each of `paths`.
fn tool_digests(method: Verify, paths: &[&Path]) -> Vec<String> {
    tool_output(start_tool(method, paths), paths.len())
}

/// Lower-case hex of the method's length: crc32 eight digits.
fn assert_digest_form(method: Verify, digest: &str) {
    let digits = match method {
        Verify::Crc32 => 8,
        Verify::Md5 => 32,
        _ => 64,
    };
    assert!(
        digest.len() == digits
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{} digest {digest:?} is not {digits} lower-case hex digits",
        method.name()
    );
}

/// The one checksum of a one-file copy, for `target`.
fn only_checksum<'a>(
    outcome: &'a Outcome,
    target: &Path,
    what: &str,
) -> &'a copyd_engine::Checksum {
    assert!(
        outcome.failures.is_empty(),
        "{what}: {:?}",
        outcome.failures
    );
    let [checksum] = &outcome.checksums[..] else {
        panic!("{what}: one checksum expected: {:?}", outcome.checksums);
    };
    assert_eq!(checksum.target, target, "{what}");
    checksum
}

/// Which engines moved the bytes: never one that does not show them to the
/// digest; with a clone the reflink alone; a forced engine alone; under
/// auto one engine that has the bytes in user space.
fn assert_engines(copied: &Copied, engine: &str, len: u64, cloned: bool, what: &str) {
    let used: Vec<(&str, u64)> = copied
        .engine_bytes
        .iter()
        .filter(|(_, &bytes)| bytes > 0)
        .map(|(&name, &bytes)| (name, bytes))
        .collect();
    for offloader in OFFLOADERS {
        assert!(
            !used.iter().any(|(name, _)| *name == offloader),
            "{what}: {offloader} moved bytes though a digest was asked for: {used:?}"
        );
    }
    if len == 0 {
        assert!(used.is_empty(), "{what}: {used:?}");
        return;
    }
    let names: Vec<&str> = used.iter().map(|(name, _)| *name).collect();
    match (engine, cloned) {
        (_, true) => assert_eq!(names, ["reflink"], "{what}"),
        ("auto", false) => assert!(
            matches!(names[..], ["io_uring"] | ["standard"]),
            "{what}: {used:?}"
        ),
        (forced, false) => assert_eq!(names, [forced], "{what}"),
    }
    assert_eq!(used.iter().map(|(_, b)| b).sum::<u64>(), len, "{what}");
}

/// A copy of every size, by every method, with every engine of `engines`,
/// in `dir` (on the file system `fs`), plus the directory of all sizes
/// copied as a tree by auto; `reflinks` if the file system shares extents.
/// Each method's tool runs once, on the sources and all their copies.
fn every_method_and_engine_in(dir: &Path, fs: &str, engines: &[&str], reflinks: bool) {
    let set = EngineSet::probe();
    let began = Instant::now();
    let tree = dir.join("sources");
    fs::create_dir(&tree).unwrap();
    let sources: Vec<(PathBuf, Vec<u8>)> = SIZES
        .iter()
        .enumerate()
        .map(|(seed, &len)| {
            let path = tree.join(format!("file-{len}"));
            let data = write_file(&path, len, seed as u64 + 1);
            (path, data)
        })
        .collect();
    // A clone of no bytes is no clone: an empty file is created, not shared.
    let clones =
        |engine: &str, len: usize| reflinks && matches!(engine, "reflink" | "auto") && len > 0;
    for method in DIGESTS {
        // (which source, the copy, its recorded digest, what it was)
        let mut copies: Vec<(usize, PathBuf, String, String)> = Vec::new();
        for engine in engines {
            for (which, (source, data)) in sources.iter().enumerate() {
                let target = dir.join(format!("copy-{}-{engine}-{}", method.name(), data.len()));
                let what = format!("{fs}: {} by {engine}, {} B", method.name(), data.len());
                let copied = copy_with(source, &target, options(engine, method), &set)
                    .unwrap_or_else(|err| panic!("{what}: {err}"));
                assert!(
                    fs::read(&target).unwrap() == *data,
                    "{what}: the copy differs"
                );
                let checksum = only_checksum(&copied.outcome, &target, &what);
                let cloned = clones(engine, data.len());
                assert_eq!(checksum.shared_extents, cloned, "{what}: shared_extents");
                assert_engines(&copied, engine, data.len() as u64, cloned, &what);
                assert_digest_form(method, &checksum.digest);
                if cloned && data.len() > 1 {
                    // Shared for real: the same physical extents. (A byte
                    // is inline in btrfs's metadata, where a clone copies
                    // it: there is no extent to share.)
                    assert_eq!(
                        physical_extents(source),
                        physical_extents(&target),
                        "{what}"
                    );
                }
                copies.push((which, target, checksum.digest.clone(), what));
            }
        }
        // The same files inside a tree: copied by the tree's workers, each
        // checksum named by its path in the copy.
        let tree_copy = dir.join(format!("tree-{}", method.name()));
        let what = format!("{fs}: {} of a tree by auto", method.name());
        let copied = copy_with(&tree, &tree_copy, options("auto", method), &set)
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        assert!(copied.outcome.failures.is_empty(), "{what}");
        assert_eq!(copied.outcome.checksums.len(), sources.len(), "{what}");
        for (which, (source, data)) in sources.iter().enumerate() {
            let target = tree_copy.join(source.file_name().unwrap());
            let checksum = copied
                .outcome
                .checksums
                .iter()
                .find(|c| c.target == target)
                .unwrap_or_else(|| panic!("{what}: no checksum of {}", target.display()));
            assert!(
                fs::read(&target).unwrap() == *data,
                "{what}: the copy differs"
            );
            assert_eq!(
                checksum.shared_extents,
                clones("auto", data.len()),
                "{what}"
            );
            copies.push((
                which,
                target,
                checksum.digest.clone(),
                format!("{what}, {} B", data.len()),
            ));
        }

        let mut paths: Vec<&Path> = sources.iter().map(|(path, _)| path.as_path()).collect();
        paths.extend(copies.iter().map(|(_, target, ..)| target.as_path()));
        let tool = tool_digests(method, &paths);
        let (of_sources, of_copies) = tool.split_at(sources.len());
        for ((which, _, digest, what), of_copy) in copies.iter().zip(of_copies) {
            assert_eq!(
                digest, &of_sources[*which],
                "{what}: against the tool's digest of the source"
            );
            assert_eq!(
                digest, of_copy,
                "{what}: against the tool's digest of the copy"
            );
        }
        for (_, target, ..) in &copies {
            fs::remove_file(target).unwrap();
        }
        fs::remove_dir_all(&tree_copy).unwrap();
    }
    eprintln!(
        "{fs}: every size, method and engine {engines:?} in {:.1?}",
        began.elapsed()
    );
}

/// The engines that can verify, as this machine has them (io_uring depends
/// on the kernel: said when it is missing).
fn verifying_engines() -> Vec<&'static str> {
    let mut engines = vec!["auto", "standard"];
    match EngineSet::probe().names().contains(&"io_uring") {
        true => engines.insert(1, "io_uring"),
        false => eprintln!("SKIP: io_uring unavailable here"),
    }
    engines
}

#[test]
fn every_size_method_and_engine_on_ext4() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    every_method_and_engine_in(dir.path(), "ext4", &verifying_engines(), false);
}

#[test]
fn every_size_method_and_engine_on_tmpfs() {
    let Some(mount) = ScratchMount::small_tmpfs(16 << 10) else {
        return;
    };
    every_method_and_engine_in(&mount.path, "tmpfs", &verifying_engines(), false);
}

#[test]
fn every_size_method_and_engine_on_btrfs_with_reflink() {
    let Some(mount) = ScratchMount::loop_fs("btrfs", 256) else {
        return;
    };
    let mut engines = verifying_engines();
    engines.push("reflink");
    every_method_and_engine_in(&mount.path, "btrfs", &engines, true);
}

/// The names in `dir`.
fn names_in(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    names.sort();
    names
}

/// A digest with splice or copy_file_range cannot be taken (the bytes never
/// pass through user space): refused as an invalid argument by resolve, and
/// by run for a request changed after resolving, before anything is written.
/// Verify::Size and no verify need no bytes: those engines stay allowed.
#[test]
fn a_digest_with_an_engine_that_never_sees_the_bytes_is_refused() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("source");
    write_file(&source, (1 << 20) + 1, 4);
    let target = dir.path().join("copy");
    let request = |engine: &str, verify| Request {
        operation: Operation::Copy,
        sources: vec![source.clone()],
        destination: target.clone(),
        options: options(engine, verify),
    };
    let set = EngineSet::probe();
    for engine in OFFLOADERS {
        for method in DIGESTS {
            let what = format!("{} by {engine}", method.name());
            let options = options(engine, method);
            assert_eq!(
                options.check_verify().unwrap_err().kind,
                ErrorKind::InvalidArgument,
                "{what}"
            );
            let err = resolve(request(engine, method)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{what}: {err}");
            // Resolved without a digest, then asked for one: run refuses.
            let mut resolved = resolve(request(engine, Verify::None)).unwrap();
            resolved.request.options.verify = method;
            let progress = Progress::new();
            let err = run(&resolved, &set, "9", &progress, &Control::default()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{what}: {err}");
            assert!(progress.engine_bytes().is_empty(), "{what}");
            assert_eq!(
                names_in(dir.path()),
                ["source"],
                "{what}: something was written"
            );
        }
        for method in [Verify::None, Verify::Size] {
            options(engine, method).check_verify().unwrap();
        }
    }
    for engine in ["auto", "reflink", "io_uring", "standard"] {
        for method in DIGESTS {
            options(engine, method).check_verify().unwrap();
        }
    }
}

/// Verify::Size passes a normal copy and records no digest; it needs no
/// bytes, so splice and copy_file_range still move them.
#[test]
fn verify_by_size_passes_a_normal_copy_and_records_no_checksum() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let set = EngineSet::probe();
    for (seed, len) in [0usize, 1, (1 << 20) + 1, (9 << 20) + 7]
        .into_iter()
        .enumerate()
    {
        let source = dir.path().join(format!("source-{len}"));
        let data = write_file(&source, len, seed as u64 + 10);
        for engine in ["auto", "splice", "copy_file_range", "io_uring", "standard"] {
            if !set.names().contains(&engine) && engine != "auto" {
                continue;
            }
            let what = format!("size by {engine}, {len} B");
            let target = dir.path().join(format!("copy-{engine}-{len}"));
            let copied = copy_with(&source, &target, options(engine, Verify::Size), &set)
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert!(copied.outcome.failures.is_empty(), "{what}");
            assert!(
                copied.outcome.checksums.is_empty(),
                "{what}: {:?}",
                copied.outcome.checksums
            );
            assert!(
                fs::read(&target).unwrap() == data,
                "{what}: the copy differs"
            );
            if OFFLOADERS.contains(&engine) && len > 0 {
                assert_eq!(
                    copied.engine_bytes.get(engine),
                    Some(&(len as u64)),
                    "{what}: {:?}",
                    copied.engine_bytes
                );
            }
            fs::remove_file(&target).unwrap();
        }
    }
}

/// Logical blocks of `path` that hold data, by filefrag.
fn data_blocks(path: &Path) -> Vec<(u64, u64)> {
    physical_extents(path)
        .into_iter()
        .map(|(logical, _, length)| (logical, length))
        .collect()
}

/// A sparse file (data at 1 MiB and 40 MiB, a trailing hole): its holes
/// are not read but count as zeros in the digest, which is sha256sum's; the
/// copy keeps its holes where the source has them.
#[test]
fn a_sparse_file_is_hashed_with_its_holes_and_keeps_them() {
    let ext4 = tempfile::tempdir_in("/tmp").unwrap();
    let Some(tmpfs) = ScratchMount::small_tmpfs(4 << 10) else {
        return;
    };
    let set = EngineSet::probe();
    for (fs, dir) in [("ext4", ext4.path()), ("tmpfs", &tmpfs.path)] {
        let source = dir.join("sparse");
        let file = fs::File::create(&source).unwrap();
        file.write_all_at(&common::pattern(100_000, 1), MIB)
            .unwrap();
        file.write_all_at(&common::pattern(300_001, 2), 40 * MIB)
            .unwrap();
        file.set_len(64 * MIB).unwrap();
        file.sync_all().unwrap();
        let source_du = common::du_kib(&source);
        assert!(
            source_du < 1024,
            "{fs}: the source should be sparse, uses {source_du} KiB"
        );
        for engine in verifying_engines() {
            let what = format!("{fs}: sparse by {engine}");
            let target = dir.join(format!("copy-{engine}"));
            let copied = copy_with(&source, &target, options(engine, Verify::Sha256), &set)
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            let checksum = only_checksum(&copied.outcome, &target, &what);
            let tool = tool_digests(Verify::Sha256, &[&source, &target]);
            assert_eq!(
                checksum.digest, tool[0],
                "{what}: against sha256sum of the source"
            );
            assert_eq!(
                checksum.digest, tool[1],
                "{what}: against sha256sum of the copy"
            );
            assert!(!checksum.shared_extents, "{what}");
            // Only the data was read and written: the holes went to the
            // digest as zeros, unread.
            let moved: u64 = copied.engine_bytes.values().sum();
            assert!(moved < MIB, "{what}: {moved} bytes moved");
            // (By which engines: `moved` makes its sum check hold.)
            assert_engines(&copied, engine, moved, false, &what);
            assert_eq!(
                fs::metadata(&target).unwrap().len(),
                64 * MIB,
                "{what}: trailing hole lost"
            );
            let target_du = common::du_kib(&target);
            assert!(
                target_du <= source_du + 64,
                "{what}: the copy uses {target_du} KiB, the source {source_du} KiB"
            );
            if fs == "ext4" {
                // tmpfs has no FIEMAP for filefrag.
                assert_eq!(
                    data_blocks(&target),
                    data_blocks(&source),
                    "{what}: data blocks"
                );
            }
            common::output("cmp", &[source.as_os_str(), target.as_os_str()]);
            fs::remove_file(&target).unwrap();
        }
    }
}

/// A copy carried on from a durable offset hashes the source's prefix it
/// does not copy again: the digest is sha256sum's of the whole source (a
/// digest of the rest alone would not match the copy read back, and the
/// file would fail as a mismatch).
#[test]
fn a_resumed_copy_hashes_its_durable_prefix() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("source");
    let len = (5 << 20) + 123;
    let data = write_file(&source, len, 21);
    let durable = 2 * MIB;
    let sha256sum = &tool_digests(Verify::Sha256, &[&source])[0];
    let set = EngineSet::probe();
    for (n, engine) in verifying_engines().into_iter().enumerate() {
        let what = format!("resumed by {engine}");
        let target = dir.path().join(format!("copy-{engine}"));
        let resolved = resolve(Request {
            operation: Operation::Copy,
            sources: vec![source.clone()],
            destination: target.clone(),
            options: options(engine, Verify::Sha256),
        })
        .unwrap();
        // What the interrupted run left: its first 2 MiB durable, as the
        // journal says, then bytes nobody vouched for.
        let tag = format!("{}", 40 + n);
        let temp = temp_path(&target, &tag, 0);
        let partial = fs::File::create_new(&temp).unwrap();
        partial.write_all_at(&data[..durable as usize], 0).unwrap();
        partial
            .write_all_at(&vec![0xEE; MIB as usize], durable)
            .unwrap();
        partial.sync_all().unwrap();
        let identity = FileIdentity::of(&fs::metadata(&source).unwrap());
        let resume = ResumeState {
            resuming: true,
            started: HashSet::from([0]),
            offsets: HashMap::from([((0, PathBuf::new()), (identity, durable))]),
            ..ResumeState::default()
        };
        let progress = Progress::new();
        let outcome = run_resumable(
            &resolved,
            &set,
            &tag,
            &progress,
            &Control::default(),
            &resume,
            &Recorder::default(),
        )
        .unwrap_or_else(|err| panic!("{what}: {err}"));
        let checksum = only_checksum(&outcome, &target, &what);
        assert_eq!(
            &checksum.digest, sha256sum,
            "{what}: against sha256sum of the source"
        );
        assert!(
            fs::read(&target).unwrap() == data,
            "{what}: the copy differs"
        );
        assert!(!temp.exists(), "{what}: the temporary copy stayed");
        // It did carry on: the prefix was read for the digest, not copied.
        let copied = Copied {
            outcome: outcome.clone(),
            engine_bytes: progress.engine_bytes(),
            progress,
        };
        assert_engines(&copied, engine, len as u64 - durable, false, &what);
        fs::remove_file(&target).unwrap();
    }
}

/// The large files' size: 2 GiB, and a MiB and 7 bytes more, so that
/// offsets pass 2^31 and the last chunk is short.
const LARGE: u64 = (2 << 30) + (1 << 20) + 7;

/// Writes the large files' bytes to `path`, synced if `sync`: a MiB of
/// pattern, each of its 4 KiB pages stamped with its own number in the
/// file, so that a page landing in the wrong place, or twice, changes every
/// digest. (Generating 2 GiB of pattern in a debug build would take longer
/// than copying it.) They are the same bytes on every file system.
fn write_large(path: &Path, sync: bool) {
    use std::io::Write;
    let began = Instant::now();
    let mut block = common::pattern(MIB as usize, 99);
    let mut file = fs::File::create(path).unwrap();
    for mib in 0..LARGE.div_ceil(MIB) {
        for (page, stamp) in block.chunks_mut(4096).enumerate() {
            stamp[..8].copy_from_slice(&(mib * 256 + page as u64).to_le_bytes());
        }
        let len = (LARGE - mib * MIB).min(MIB) as usize;
        file.write_all(&block[..len]).unwrap();
    }
    if sync {
        file.sync_all().unwrap();
    }
    eprintln!("{}: written in {:.1?}", path.display(), began.elapsed());
}

/// The tools' digests of the large files' bytes, by method: each tool runs
/// once, on the first large source that asks (the bytes are the same on
/// every file system), while the others wait for it. sha256sum of 2 GiB
/// takes several seconds of CPU on a machine of two shared cores.
fn large_digest(method: Verify, source: &Path) -> String {
    static KNOWN: [std::sync::OnceLock<String>; 3] = [const { std::sync::OnceLock::new() }; 3];
    let cell = &KNOWN[DIGESTS.iter().position(|m| *m == method).unwrap()];
    cell.get_or_init(|| {
        let began = Instant::now();
        let digest = tool_digests(method, &[source]).remove(0);
        eprintln!(
            "the tool's {} of 2 GiB: {:.1?}",
            method.name(),
            began.elapsed()
        );
        digest
    })
    .clone()
}

/// Copies the large `source` to `target` by `engine`, verified by `method`,
/// while the method's tool reads the source: the digest must be the tool's,
/// the copy the same bytes (cmp), moved by the right engine. The copy is
/// deleted after.
fn large_copy(
    source: &Path,
    target: &Path,
    (fs, engine, method): (&str, &str, Verify),
    cloned: bool,
) {
    let what = format!("{fs}: 2 GiB by {engine}, {}", method.name());
    let set = EngineSet::probe();
    std::thread::scope(|scope| {
        let tool = scope.spawn(|| large_digest(method, source));
        let began = Instant::now();
        let copied = copy_with(source, target, options(engine, method), &set)
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        let took = began.elapsed();
        let checksum = only_checksum(&copied.outcome, target, &what);
        assert_eq!(checksum.shared_extents, cloned, "{what}");
        assert_engines(&copied, engine, LARGE, cloned, &what);
        let tool_began = Instant::now();
        let expected = tool.join().unwrap();
        let tool_waited = tool_began.elapsed();
        assert_eq!(
            checksum.digest, expected,
            "{what}: against the tool's digest of the source"
        );
        let cmp_began = Instant::now();
        common::output("cmp", &[source.as_os_str(), target.as_os_str()]);
        let cmp_took = cmp_began.elapsed();
        if cloned {
            let (original, clone) = (physical_extents(source), physical_extents(target));
            assert!(!original.is_empty(), "{what}: filefrag shows no extents");
            assert_eq!(original, clone, "{what}: the clone shares no extents");
        }
        fs::remove_file(target).unwrap();
        eprintln!(
            "{what}: copied and verified in {took:.1?} ({:.0} MiB/s, by {:?}); then waited {tool_waited:.1?} for the tool; cmp {cmp_took:.1?}",
            LARGE as f64 / MIB as f64 / took.as_secs_f64(),
            copied.engine_bytes.keys().collect::<Vec<_>>(),
        );
    });
}

/// 2 GiB on ext4 by io_uring (sha256) and auto (crc32).
#[test]
fn two_gib_on_ext4_by_io_uring_and_auto() {
    let began = Instant::now();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("large");
    // Not synced: the copies are read from the page cache either way, and
    // the disk is the verification's (each copy is written out, dropped
    // from the cache and read back).
    write_large(&source, false);
    match EngineSet::probe().names().contains(&"io_uring") {
        true => large_copy(
            &source,
            &dir.path().join("copy"),
            ("ext4", "io_uring", Verify::Sha256),
            false,
        ),
        false => eprintln!("SKIP: io_uring unavailable here"),
    }
    large_copy(
        &source,
        &dir.path().join("copy"),
        ("ext4", "auto", Verify::Crc32),
        false,
    );
    fs::remove_file(&source).unwrap();
    eprintln!(
        "ext4: 2 GiB by io_uring and auto in {:.1?}",
        began.elapsed()
    );
}

/// 2 GiB on ext4 by standard, md5. A test of its own, named to sort first
/// of the large ones (libtest starts tests in name order), because it takes
/// longest: md-5's compression function is `#[inline]`, so it is compiled
/// into copyd-engine at the test build's opt-level 0 whatever the profile
/// says for md-5 (about 60 MiB/s, against sha2's 1.4 GiB/s, whose SHA-NI
/// code is not inlined and keeps opt-level 3), and a copy hashes its bytes
/// twice (the source, the copy read back).
#[test]
fn two_gib_md5_on_ext4_by_standard() {
    let began = Instant::now();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let source = dir.path().join("large");
    write_large(&source, false);
    large_copy(
        &source,
        &dir.path().join("copy"),
        ("ext4", "standard", Verify::Md5),
        false,
    );
    fs::remove_file(&source).unwrap();
    eprintln!("ext4: 2 GiB by standard in {:.1?}", began.elapsed());
}

/// 2 GiB on a tmpfs of 4.5 GiB by auto, sha256.
#[test]
fn two_gib_on_tmpfs() {
    let began = Instant::now();
    let Some(mount) = ScratchMount::small_tmpfs(4608 << 10) else {
        return;
    };
    let source = mount.path.join("large");
    write_large(&source, false);
    large_copy(
        &source,
        &mount.path.join("copy"),
        ("tmpfs", "auto", Verify::Sha256),
        false,
    );
    fs::remove_file(&source).unwrap();
    eprintln!("tmpfs: 2 GiB in {:.1?}", began.elapsed());
}

/// 2 GiB on btrfs (a sparse 5 GiB loop image) by reflink, sha256: the
/// source is read once, and its digest stands for the clone.
#[test]
fn two_gib_on_btrfs_by_reflink() {
    let began = Instant::now();
    let Some(mount) = ScratchMount::loop_fs("btrfs", 5 << 10) else {
        return;
    };
    let source = mount.path.join("large");
    // Synced, so that the clone's time is the clone's, not the source's
    // writeback (a clone writes its source's dirty range out first).
    write_large(&source, true);
    large_copy(
        &source,
        &mount.path.join("copy"),
        ("btrfs", "reflink", Verify::Sha256),
        true,
    );
    fs::remove_file(&source).unwrap();
    eprintln!("btrfs: 2 GiB in {:.1?}", began.elapsed());
}
