//! Files whose size is not their contents' are copied by reading to end of
//! file, as cp does: procfs says 0 bytes, sysfs a page, and a file may
//! hold more than the walk saw. None may complete with other content.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use copyd_engine::{
    resolve, run_resumable, Control, EngineSet, FileIdentity, Journal, Operation, Options,
    Preserve, Progress, Request, ResumeState,
};

/// What `cat` prints for `path`.
fn cat(path: &Path) -> Vec<u8> {
    let out = std::process::Command::new("cat")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "cat {}", path.display());
    out.stdout
}

/// Files of procfs and sysfs whose contents do not change from one read to
/// the next; the sysfs ones that exist here.
fn synthetic_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/proc/version")];
    let sysfs = [
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/devices/system/cpu/possible",
        "/sys/kernel/uevent_helper",
    ];
    let present = sysfs.iter().map(PathBuf::from).find(|p| p.exists());
    files.extend(present);
    assert!(files.len() == 2, "no sysfs file of {sysfs:?} here");
    files
}

fn usable_engines() -> Vec<&'static str> {
    let mut names = vec!["auto"];
    names.extend(
        EngineSet::probe()
            .names()
            .into_iter()
            .filter(|n| *n != "reflink"),
    );
    names
}

#[test]
fn proc_and_sys_files_are_copied_to_their_end_by_every_engine() {
    for engine in usable_engines() {
        for source in synthetic_files() {
            let dir = tempfile::tempdir().unwrap();
            let copy = dir.path().join("copy");
            let copied = common::copy(&source, &copy, engine, Preserve::default())
                .unwrap_or_else(|err| panic!("{engine}, {}: {err}", source.display()));
            let want = cat(&source);
            assert!(!want.is_empty());
            assert_eq!(
                fs::read(&copy).unwrap(),
                want,
                "{engine}: the copy of {} differs from cat's",
                source.display()
            );
            let snapshot = copied.progress.snapshot();
            assert_eq!(snapshot.bytes_done, snapshot.bytes_total, "{engine}");
            assert_eq!(snapshot.files_done, 1, "{engine}");
        }
    }
}

#[test]
fn a_proc_tree_is_copied_with_every_file_whole() {
    let source = Path::new("/proc/sys/fs/inotify");
    for engine in usable_engines() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        common::copy(source, &copy, engine, Preserve::default())
            .unwrap_or_else(|err| panic!("{engine}: {err}"));
        let mut names = 0;
        for entry in fs::read_dir(source).unwrap() {
            let name = entry.unwrap().file_name();
            let got = fs::read(copy.join(&name)).unwrap();
            assert_eq!(got, cat(&source.join(&name)), "{engine}: {name:?}");
            assert!(!got.is_empty(), "{engine}: {name:?}");
            names += 1;
        }
        assert!(names >= 3, "{names}");
    }
}

/// Appends to `path` when item 0 starts: after the walk saw its size, as a
/// file growing (or a file system reporting a smaller size) would.
struct GrowsOnStart {
    path: PathBuf,
    more: Vec<u8>,
}

impl Journal for GrowsOnStart {
    fn item_started(&self, _: usize) {
        let mut file = OpenOptions::new().append(true).open(&self.path).unwrap();
        file.write_all(&self.more).unwrap();
    }
    fn items_built(&self, _: &[(usize, copyd_engine::CopyIdentity)]) {}
    fn item_done(&self, _: usize) {}
    fn files_durable(&self, _: usize, _: &[PathBuf]) {}
    fn file_offset(&self, _: usize, _: &Path, _: FileIdentity, _: u64) {}
}

#[test]
fn bytes_beyond_the_walked_size_are_copied_too() {
    // Sizes on both sides of the paths a file may take (small data, read
    // ahead, segments), each engine.
    for engine in usable_engines() {
        for len in [0usize, 10_000, 3 << 20, 9 << 20] {
            let dir = tempfile::tempdir().unwrap();
            let source = dir.path().join("grows");
            let mut data = common::write_file(&source, len, len as u64);
            let journal = GrowsOnStart {
                path: source.clone(),
                more: common::pattern(150_000, 9),
            };
            let copy = dir.path().join("copy");
            let resolved = resolve(Request {
                operation: Operation::Copy,
                sources: vec![source.clone()],
                destination: copy.clone(),
                options: Options {
                    engine: engine.into(),
                    ..Options::default()
                },
            })
            .unwrap();
            let (progress, control) = (Progress::new(), Control::default());
            run_resumable(
                &resolved,
                &EngineSet::probe(),
                "test",
                &progress,
                &control,
                &ResumeState::default(),
                &journal,
            )
            .unwrap_or_else(|err| panic!("{engine}, {len}: {err}"));
            data.extend(&journal.more);
            let got = fs::read(&copy).unwrap();
            assert!(
                got == data,
                "{engine}, {len}: copy of {} bytes, source of {}",
                got.len(),
                data.len()
            );
            let snapshot = progress.snapshot();
            assert_eq!(snapshot.bytes_done, data.len() as u64, "{engine}, {len}");
            assert_eq!(snapshot.bytes_total, snapshot.bytes_done, "{engine}, {len}");
        }
    }
}
