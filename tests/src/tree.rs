//! Test trees: making them, and comparing them on disk.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The non-UTF-8 file name every test tree contains (Latin-1 "café.txt").
pub const NON_UTF8_NAME: &[u8] = b"caf\xe9.txt";

pub fn non_utf8_name() -> &'static OsStr {
    OsStr::from_bytes(NON_UTF8_NAME)
}

/// What [`make_tree`] made.
#[derive(Debug, Clone, Copy, Default)]
pub struct TreeStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Makes a tree under `root` (created): `nfiles` regular files of random
/// sizes (mostly small, some up to 1 MiB, some empty) spread over nested
/// directories, an empty directory, a relative symlink to a file, a dangling
/// symlink, a file with mode 0640 and one with 0755, and the non-UTF-8 name
/// b"caf\xe9.txt". Deterministic for a given seed.
pub fn make_tree(root: &Path, nfiles: usize, seed: u64) -> TreeStats {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut st = TreeStats::default();
    fs::create_dir_all(root).unwrap();
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    for (i, d) in ["a", "a/b", "a/b/c", "a/b/c/d", "e", "e/f", "g h", "empty"]
        .iter()
        .enumerate()
    {
        let p = root.join(d);
        fs::create_dir(&p).unwrap();
        st.dirs += 1;
        if i != 7 {
            dirs.push(p);
        }
    }
    for i in 0..nfiles {
        let dir = &dirs[rng.usize(..dirs.len())];
        let size = match rng.u32(0..100) {
            0..=4 => 0,
            5..=79 => rng.usize(1..8 * 1024),
            80..=96 => rng.usize(8 * 1024..128 * 1024),
            _ => rng.usize(128 * 1024..1024 * 1024),
        };
        let path = dir.join(format!("file-{i:04}.dat"));
        write_random(&path, size as u64, &mut rng);
        st.files += 1;
        st.bytes += size as u64;
    }
    // Special entries.
    let special = root.join(non_utf8_name());
    fs::write(&special, b"bonjour, je suis un fichier au nom latin-1\n").unwrap();
    st.files += 1;
    st.bytes += fs::metadata(&special).unwrap().len();

    fs::write(root.join("a/target.txt"), b"the symlink points here\n").unwrap();
    st.files += 1;
    st.bytes += 24;
    symlink("target.txt", root.join("a/link-to-target")).unwrap();
    symlink("../does/not/exist", root.join("e/dangling-link")).unwrap();
    st.symlinks += 2;

    let private = root.join("e/f/private.txt");
    fs::write(&private, b"mode 0640\n").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o640)).unwrap();
    let script = root.join("a/b/script.sh");
    fs::write(&script, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    st.files += 2;
    st.bytes += 10 + 18;
    st
}

/// Writes `size` random bytes (not sparse, not compressible) to `path`.
pub fn write_random(path: &Path, size: u64, rng: &mut fastrand::Rng) {
    let mut f = fs::File::create(path).unwrap();
    let mut buf = vec![0u8; (size as usize).min(1 << 20)];
    let mut left = size;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// A big file of `size` bytes, written block by block (a 1 MiB random block
/// whose first 8 bytes are the block number), so it is not sparse and every
/// block differs, without spending the time to generate gigabytes of
/// random numbers.
pub fn make_big_file(path: &Path, size: u64, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut block = vec![0u8; 1 << 20];
    rng.fill(&mut block);
    let mut f = std::io::BufWriter::with_capacity(4 << 20, fs::File::create(path).unwrap());
    let mut left = size;
    let mut n: u64 = 0;
    while left > 0 {
        block[..8].copy_from_slice(&n.to_le_bytes());
        let k = (left as usize).min(block.len());
        f.write_all(&block[..k]).unwrap();
        left -= k as u64;
        n += 1;
    }
    f.into_inner().unwrap();
}

/// One entry of a tree, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, size: u64 },
    Symlink { target: OsString },
    Other { mode: u32 },
}

/// Every entry below `root` (not `root` itself), by relative path, without
/// following symlinks. An empty map for a missing root.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let dir = root.join(rel);
        let Ok(rd) = fs::read_dir(&dir) else { return };
        for e in rd {
            let e = e.unwrap();
            let relp = rel.join(e.file_name());
            let md = fs::symlink_metadata(e.path()).unwrap();
            let ft = md.file_type();
            let mode = md.mode() & 0o7777;
            let entry = if ft.is_symlink() {
                Entry::Symlink {
                    target: fs::read_link(e.path()).unwrap().into_os_string(),
                }
            } else if ft.is_dir() {
                Entry::Dir { mode }
            } else if ft.is_file() {
                Entry::File {
                    mode,
                    size: md.len(),
                }
            } else {
                Entry::Other { mode }
            };
            let is_dir = ft.is_dir();
            out.insert(relp.clone(), entry);
            if is_dir {
                walk(root, &relp, out);
            }
        }
    }
    walk(root, Path::new(""), &mut out);
    out
}

/// Asserts `a` and `b` are the same tree: `diff -r --no-dereference` finds
/// no difference in names, contents or symlink targets, and a walk finds
/// the same entries with the same types, sizes, symlink targets and
/// permission bits (copyd preserves mode by default).
#[track_caller]
pub fn assert_trees_equal(a: &Path, b: &Path) {
    assert!(a.exists(), "{} does not exist", a.display());
    assert!(b.exists(), "{} does not exist", b.display());
    let out = crate::cmd::run(
        Command::new("diff")
            .arg("-r")
            .arg("--no-dereference")
            .arg(a)
            .arg(b),
    );
    assert!(
        out.success(),
        "trees differ (diff -r --no-dereference):\n{out}"
    );
    let sa = snapshot(a);
    let sb = snapshot(b);
    let mut problems = Vec::new();
    for (k, va) in &sa {
        match sb.get(k) {
            None => problems.push(format!("only in {}: {}", a.display(), k.display())),
            Some(vb) if va != vb => problems.push(format!("{}: {:?} != {:?}", k.display(), va, vb)),
            _ => {}
        }
    }
    for k in sb.keys() {
        if !sa.contains_key(k) {
            problems.push(format!("only in {}: {}", b.display(), k.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "trees {} and {} differ:\n  {}",
        a.display(),
        b.display(),
        problems.join("\n  ")
    );
}

/// Asserts two regular files (or symlinks, not followed) are equal.
#[track_caller]
pub fn assert_files_equal(a: &Path, b: &Path) {
    let out = crate::cmd::run(Command::new("cmp").arg(a).arg(b));
    assert!(out.success(), "files differ:\n{out}");
    let ma = fs::symlink_metadata(a).unwrap();
    let mb = fs::symlink_metadata(b).unwrap();
    assert_eq!(
        ma.mode() & 0o7777,
        mb.mode() & 0o7777,
        "modes of {} and {}",
        a.display(),
        b.display()
    );
}

/// Copies a tree with `cp -a` (a reference copy made without copyd).
#[track_caller]
pub fn reference_copy(src: &Path, dst: &Path) {
    crate::cmd::run(Command::new("cp").arg("-a").arg(src).arg(dst)).assert_success();
}

/// Names in a directory (empty if it does not exist).
pub fn dir_names(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Leftover temporary files of copyd in `dir` (recursively): hidden names
/// that contain "copyd".
pub fn copyd_temp_leftovers(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().as_bytes();
            n.starts_with(b".") && n.windows(5).any(|w| w.eq_ignore_ascii_case(b"copyd"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn must_differ(a: &Path, b: &Path, what: &str) {
        let r = std::panic::catch_unwind(|| assert_trees_equal(a, b));
        assert!(r.is_err(), "assert_trees_equal missed: {what}");
    }

    #[test]
    fn tree_comparison_catches_differences() {
        let d = crate::scratch_dir("selftest");
        let a = d.path().join("a");
        let st = make_tree(&a, 40, 99);
        assert_eq!(st.files, 40 + 4);
        assert!(a.join(non_utf8_name()).is_file());
        let b = d.path().join("b");
        reference_copy(&a, &b);
        assert_trees_equal(&a, &b);

        // Contents.
        let f = b.join("a/target.txt");
        fs::write(&f, b"the symlink points HERE\n").unwrap();
        must_differ(&a, &b, "changed contents");
        fs::write(&f, b"the symlink points here\n").unwrap();
        assert_trees_equal(&a, &b);
        // Symlink target.
        fs::remove_file(b.join("a/link-to-target")).unwrap();
        symlink("./target.txt", b.join("a/link-to-target")).unwrap();
        must_differ(&a, &b, "symlink target");
        fs::remove_file(b.join("a/link-to-target")).unwrap();
        symlink("target.txt", b.join("a/link-to-target")).unwrap();
        // Mode.
        fs::set_permissions(b.join("a/b/script.sh"), fs::Permissions::from_mode(0o644)).unwrap();
        must_differ(&a, &b, "mode");
        fs::set_permissions(b.join("a/b/script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        // Extra empty directory.
        fs::create_dir(b.join("extra")).unwrap();
        must_differ(&a, &b, "extra directory");
        fs::remove_dir(b.join("extra")).unwrap();
        assert_trees_equal(&a, &b);
        // Temp leftovers are found.
        fs::write(b.join("e/.copyd-tmp-123"), b"").unwrap();
        assert_eq!(
            copyd_temp_leftovers(&b),
            vec![PathBuf::from("e/.copyd-tmp-123")]
        );
    }
}
