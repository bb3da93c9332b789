//! copyctl on a machine where no copyd is installed: it must start a private
//! copyd over a socket pair, say so in one line, and copy for real.

use std::path::Path;
use std::process::{Command, Output};

fn copyctl(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_copyctl"))
        .args(args)
        // No bus to find: neither a session bus nor (here) a system bus.
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("COPYD_ADDRESS")
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/copyd-test-bus",
        )
        .output()
        .unwrap()
}

/// `diff -r --no-dereference` finds `a` and `b` the same.
fn assert_same_tree(a: &Path, b: &Path) {
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

fn tree(root: &Path) {
    for d in 0..5 {
        let dir = root.join(format!("dir{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..20 {
            std::fs::write(dir.join(format!("f{f}")), vec![(d * f) as u8; 1000 * f]).unwrap();
        }
    }
    std::os::unix::fs::symlink("dir0/f1", root.join("link")).unwrap();
    use std::os::unix::ffi::OsStrExt;
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        b"latin-1 name",
    )
    .unwrap();
}

#[test]
fn copy_and_move_through_a_private_copyd() {
    let dir = tempfile::tempdir().unwrap();
    let (source, copy, moved) = (
        dir.path().join("src"),
        dir.path().join("copy"),
        dir.path().join("moved"),
    );
    tree(&source);

    let output = copyctl(&[
        "copy".as_ref(),
        "-r".as_ref(),
        "--progress".as_ref(),
        source.as_os_str(),
        copy.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "copyctl failed: {stderr}");
    assert!(
        stderr.contains("using a private copyd"),
        "no notice in: {stderr}"
    );
    assert_same_tree(&source, &copy);

    let output = copyctl(&[
        "--json".as_ref(),
        "move".as_ref(),
        copy.as_os_str(),
        moved.as_os_str(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["state"], "completed");
    assert_eq!(summary["operation"], "move");
    assert!(!copy.exists(), "a moved source must be gone");
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&source)
        .arg(&moved)
        .output()
        .unwrap();
    assert!(diff.status.success());

    // Copying into a directory that already has a "src": AlreadyExists, in
    // one clear line, and the existing one is left as it was.
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("src")).unwrap();
    std::fs::write(other.join("src/keep"), b"mine").unwrap();
    let output = copyctl(&[
        "copy".as_ref(),
        "-r".as_ref(),
        source.as_os_str(),
        other.as_os_str(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("copyctl: org.example.Copyd1.Error.AlreadyExists: "),
        "{stderr}"
    );
    assert_eq!(std::fs::read(other.join("src/keep")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(other.join("src")).unwrap().count(), 1);
}

/// Two private copyds (no service installed) copying into one directory at
/// once: each one's job ids start at 1, so temporary names made of the id
/// alone were the same (`.copyd-1-0.tmp`) and the second copy failed or,
/// worse, took over the first one's half-built tree. Each name now has a
/// random part per job; both copies must complete, whole.
#[test]
fn two_private_copyds_copy_into_one_directory_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    tree(&source);
    let copies = [dir.path().join("p1"), dir.path().join("p2")];
    // Slowed down (the tree is about 1 MB) so that the two overlap.
    let children: Vec<_> = copies
        .iter()
        .map(|copy| {
            Command::new(env!("CARGO_BIN_EXE_copyctl"))
                .args(["copy", "-r", "--rate-limit", "1MB/s"])
                .arg(&source)
                .arg(copy)
                .env_remove("DBUS_SESSION_BUS_ADDRESS")
                .env_remove("COPYD_ADDRESS")
                .env(
                    "DBUS_SYSTEM_BUS_ADDRESS",
                    "unix:path=/nonexistent/copyd-test-bus",
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, copy) in children.into_iter().zip(&copies) {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "copy to {}: {}",
            copy.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_same_tree(&source, copy);
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "temporaries left: {names:?}");
}

/// The manual pages in docs/ are generated from the command-line definitions;
/// this keeps the committed copies from going stale.
#[test]
fn committed_man_page_matches_the_cli() {
    let output = Command::new(env!("CARGO_BIN_EXE_copyctl"))
        .arg("man")
        .output()
        .unwrap();
    assert!(output.status.success());
    let committed =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/copyctl.1")).unwrap();
    assert!(
        output.stdout == committed,
        "docs/copyctl.1 is stale: run `copyctl man > docs/copyctl.1`"
    );
}
