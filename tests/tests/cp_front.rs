//! `copyctl cp` and `copyctl mv`, and copyctl run as `cp` and `mv`: GNU's
//! defaults and flags, cp's messages and exit codes, real runs against a
//! copyd on a private bus.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use copyd_tests::cmd::{run, run_timeout};
use copyd_tests::{bins, osargs, CmdOutput, TestEnv};

/// Runs copyctl under the name `name` (a symlink in the test's directory),
/// in the test's directory, so that relative names work as with cp.
fn as_named(env: &TestEnv, name: &str, args: &[&str]) -> CmdOutput {
    run(Command::new(named(env, name))
        .args(args)
        .current_dir(env.work.path())
        .env("COPYD_ADDRESS", env.address()))
}

/// copyctl under the name `name`: a symlink in the test's directory.
fn named(env: &TestEnv, name: &str) -> PathBuf {
    let link = env.path(format!(".bin/{name}"));
    if !link.exists() {
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(bins::copyctl(), &link).unwrap();
    }
    link
}

fn cp(env: &TestEnv, args: &[&str]) -> CmdOutput {
    as_named(env, "cp", args)
}

fn write(path: PathBuf, text: &str) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, text).unwrap();
    path
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path).unwrap()
}

#[test]
fn cp_overwrites_merges_and_copies_into_an_existing_directory() {
    let env = TestEnv::start();
    write(env.path("a"), "new");
    write(env.path("b"), "old");
    cp(&env, &["a", "b"]).assert_success();
    assert_eq!(read(env.path("b")), "new");

    // -r SRC DEST: DEST made; again, DEST exists: into DEST/SRC, merged.
    write(env.path("src/f"), "1");
    cp(&env, &["-r", "src", "dst"]).assert_success();
    assert_eq!(read(env.path("dst/f")), "1");
    write(env.path("dst/src/only-here"), "kept");
    write(env.path("src/f"), "2");
    cp(&env, &["-r", "src", "dst"]).assert_success();
    assert_eq!(read(env.path("dst/src/f")), "2");
    assert_eq!(read(env.path("dst/src/only-here")), "kept");
    // Twice into the same place merges, no error.
    cp(&env, &["-r", "src", "dst"]).assert_success();

    // SRC/. into an existing directory: SRC's entries, merged into it.
    cp(&env, &["-r", "src/.", "dst"]).assert_success();
    assert_eq!(read(env.path("dst/f")), "2");

    // cp does not keep the source's times unless asked (-p, -a).
    let old = filetime(env.path("src/f"), 1_000_000_000);
    cp(&env, &["src/f", "plain"]).assert_success();
    assert_ne!(fs::metadata(env.path("plain")).unwrap().mtime(), old);
    cp(&env, &["-p", "src/f", "kept"]).assert_success();
    assert_eq!(fs::metadata(env.path("kept")).unwrap().mtime(), old);
}

/// Sets `path`'s modification time to `seconds`; returns it.
fn filetime(path: PathBuf, seconds: i64) -> i64 {
    let status = Command::new("touch")
        .arg("-d")
        .arg(format!("@{seconds}"))
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    seconds
}

#[test]
fn cp_messages_are_cps_and_the_exit_status_is_one() {
    let env = TestEnv::start();
    write(env.path("f"), "x");
    fs::create_dir(env.path("d")).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["nope", "x"],
            "cp: cannot stat 'nope': No such file or directory\n",
        ),
        (
            &["d", "x"],
            "cp: -r not specified; omitting directory 'd'\n",
        ),
        (&["f", "f"], "cp: 'f' and 'f' are the same file\n"),
        (
            &["-r", "d", "d/sub"],
            "cp: cannot copy a directory, 'd', into itself, 'd/sub'\n",
        ),
        (
            &["f", "none/"],
            "cp: cannot create regular file 'none/': Not a directory\n",
        ),
        (&["f", "f", "f"], "cp: target 'f': Not a directory\n"),
        (&["f", "d/"], ""),
    ];
    for (args, expected) in cases {
        let out = cp(&env, args);
        assert_eq!(out.stderr_str(), *expected, "{out}");
        assert_eq!(out.code, Some(i32::from(!expected.is_empty())), "{out}");
    }
    // Failures of some sources leave the others copied.
    let out = cp(&env, &["nope", "f", "d/"]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(env.path("d/f").exists());

    // As `copyctl cp`, the program's own name; D-Bus names only with
    // --debug, and never Rust's "(os error N)".
    let out = env.copyctl(&osargs!["cp", env.path("nope"), env.path("x")]);
    assert!(
        out.stderr_str().starts_with("copyctl: cannot stat '"),
        "{out}"
    );
    let out = env.copyctl(&osargs![
        "cp",
        "--on-conflict",
        "fail",
        env.path("f"),
        env.path("d")
    ]);
    assert_eq!(out.code, Some(1), "{out}");
    assert!(!out.stderr_str().contains("org.example"), "{out}");
    assert!(!out.stderr_str().contains("os error"), "{out}");
    let out = env.copyctl(&osargs![
        "cp",
        "--debug",
        "--on-conflict",
        "fail",
        env.path("f"),
        env.path("d")
    ]);
    assert!(
        out.stderr_str().contains("[org.example.Copyd1.Error."),
        "{out}"
    );
    let out = env.copyctl(&osargs!["cp", "--json", env.path("nope"), env.path("x")]);
    assert!(
        out.stdout_str().contains("\"error\":\"cannot stat"),
        "{out}"
    );
}

#[test]
fn cp_never_loses_the_file_its_source_names() {
    let env = TestEnv::start();
    write(env.path("data"), "keep me");
    std::os::unix::fs::symlink("data", env.path("link")).unwrap();
    // Each would remove or replace `data`, the file `link` names: refused,
    // as cp refuses them.
    for args in [
        &["--remove-destination", "link", "data"][..],
        &["-d", "link", "data"],
        &["-b", "link", "data"],
        &["-sf", "data", "data"],
        &["-b", "data", "data"],
        &["data", "link"],
    ] {
        let out = cp(&env, args);
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr_str().ends_with("are the same file\n"), "{out}");
        assert_eq!(read(env.path("data")), "keep me", "{out}");
        assert!(fs::symlink_metadata(env.path("data")).unwrap().is_file());
    }
    // What cp allows: a backup of F copied back onto F; another name of
    // the file replaced by a copy.
    cp(&env, &["-fb", "data", "data"]).assert_success();
    assert_eq!(read(env.path("data~")), "keep me");
    assert_eq!(read(env.path("data")), "keep me");
    cp(&env, &["--remove-destination", "data", "link"]).assert_success();
    assert!(fs::symlink_metadata(env.path("link")).unwrap().is_file());
    assert_eq!(read(env.path("data")), "keep me");
}

#[test]
fn cp_flags() {
    let env = TestEnv::start();
    write(env.path("a"), "new");
    write(env.path("b"), "old");
    // -n keeps what exists, -u keeps what is newer.
    cp(&env, &["-n", "a", "b"]).assert_success();
    assert_eq!(read(env.path("b")), "old");
    filetime(env.path("a"), 1_000_000_000);
    cp(&env, &["-u", "a", "b"]).assert_success();
    assert_eq!(read(env.path("b")), "old");
    // -b: the old one as b~; -S: another suffix; numbered.
    let out = cp(&env, &["-vb", "a", "b"]);
    assert_eq!(out.stdout_str(), "'a' -> 'b' (backup: 'b~')\n", "{out}");
    assert_eq!(read(env.path("b~")), "old");
    cp(&env, &["-S", ".bak", "a", "b"]).assert_success();
    assert_eq!(read(env.path("b.bak")), "new");
    cp(&env, &["--backup=numbered", "a", "b"]).assert_success();
    assert!(env.path("b.~1~").exists());
    // -i: asked on stderr, a "n" keeps the file.
    let link = env.path(".bin/cp");
    let out = run(Command::new("sh")
        .arg("-c")
        .arg(format!("echo n | {} -i a b", link.display()))
        .current_dir(env.work.path())
        .env("COPYD_ADDRESS", env.address()));
    assert_eq!(out.stderr_str(), "cp: overwrite 'b'? ", "{out}");

    // Inside a merged tree, a file meeting a directory: -n and an -i "n"
    // leave it out, exit 0 (copyd's skip and ask policies).
    write(env.path("m/x"), "file");
    fs::create_dir_all(env.path("into/m/x")).unwrap();
    cp(&env, &["-rn", "m", "into"]).assert_success();
    let out = run(Command::new("sh")
        .arg("-c")
        .arg(format!("echo n | {} -ri m into", link.display()))
        .current_dir(env.work.path())
        .env("COPYD_ADDRESS", env.address()));
    out.assert_success();
    assert!(env.path("into/m/x").is_dir());

    // -t, -T, --parents, -v for a tree.
    fs::create_dir(env.path("t")).unwrap();
    cp(&env, &["-t", "t", "a", "b"]).assert_success();
    assert!(env.path("t/a").exists() && env.path("t/b").exists());
    write(env.path("s/x/y"), "y");
    fs::create_dir(env.path("u")).unwrap();
    cp(&env, &["-rT", "s", "u"]).assert_success();
    assert_eq!(read(env.path("u/x/y")), "y");
    fs::create_dir(env.path("p")).unwrap();
    cp(&env, &["--parents", "s/x/y", "p"]).assert_success();
    assert_eq!(read(env.path("p/s/x/y")), "y");
    let out = cp(&env, &["-rv", "s", "v"]);
    assert_eq!(
        out.stdout_str(),
        "'s' -> 'v'\n's/x' -> 'v/x'\n's/x/y' -> 'v/x/y'\n",
        "{out}"
    );

    // -l and -s: links, not copies.
    cp(&env, &["-l", "a", "hard"]).assert_success();
    let (a, hard) = (
        fs::metadata(env.path("a")).unwrap(),
        fs::metadata(env.path("hard")).unwrap(),
    );
    assert_eq!(a.ino(), hard.ino());
    cp(&env, &["-s", "a", "soft"]).assert_success();
    assert_eq!(fs::read_link(env.path("soft")).unwrap(), Path::new("a"));

    // Without -r, a command-line symlink is followed; with -r (-P) it is
    // copied as a symlink; -H follows it again.
    cp(&env, &["soft", "followed"]).assert_success();
    assert!(fs::symlink_metadata(env.path("followed"))
        .unwrap()
        .is_file());
    cp(&env, &["-r", "soft", "kept-link"]).assert_success();
    assert!(fs::symlink_metadata(env.path("kept-link"))
        .unwrap()
        .is_symlink());
    cp(&env, &["-rH", "soft", "h"]).assert_success();
    assert!(fs::symlink_metadata(env.path("h")).unwrap().is_file());

    // -L in a tree: what each symlink names is copied under its name
    // (copyd's walk follows none: copyctl splits the tree for it).
    write(env.path("l/a"), "a");
    write(env.path("outside/b"), "b");
    std::os::unix::fs::symlink("../outside/b", env.path("l/lb")).unwrap();
    std::os::unix::fs::symlink("../outside", env.path("l/ldir")).unwrap();
    cp(&env, &["-rL", "l", "deref"]).assert_success();
    assert_eq!(read(env.path("deref/lb")), "b");
    assert_eq!(read(env.path("deref/ldir/b")), "b");
    assert!(fs::symlink_metadata(env.path("deref/ldir"))
        .unwrap()
        .is_dir());
    cp(&env, &["-r", "l", "nodref"]).assert_success();
    assert!(fs::symlink_metadata(env.path("nodref/lb"))
        .unwrap()
        .is_symlink());

    // -x: a mount point in the tree is made, left empty (needs root, as
    // the whole suite does).
    write(env.path("onefs/a"), "a");
    let mounted = copyd_tests::mounts::Tmpfs::mount(&env.path("onefs/m"));
    write(mounted.path().join("other"), "elsewhere");
    cp(&env, &["-ax", "onefs", "onefs-copy"]).assert_success();
    assert_eq!(read(env.path("onefs-copy/a")), "a");
    assert!(env.path("onefs-copy/m").is_dir());
    assert!(!env.path("onefs-copy/m/other").exists());
    drop(mounted);

    // Unknown options: getopt's message, exit 1.
    let out = cp(&env, &["--bogus", "a", "b"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr_str()
            .starts_with("cp: unrecognized option '--bogus'"),
        "{out}"
    );
}

#[test]
fn mv_renames_overwrites_and_refuses_as_mv() {
    let env = TestEnv::start();
    write(env.path("a"), "a");
    write(env.path("b"), "b");
    let out = as_named(&env, "mv", &["-v", "a", "b"]);
    assert_eq!(out.stdout_str(), "renamed 'a' -> 'b'\n", "{out}");
    assert_eq!(read(env.path("b")), "a");
    assert!(!env.path("a").exists());
    write(env.path("c"), "c");
    as_named(&env, "mv", &["-n", "c", "b"]).assert_success();
    assert_eq!(read(env.path("b")), "a");
    as_named(&env, "mv", &["-b", "c", "b"]).assert_success();
    assert_eq!(read(env.path("b~")), "a");

    fs::create_dir_all(env.path("d/full/x")).unwrap();
    fs::create_dir(env.path("full")).unwrap();
    let out = as_named(&env, "mv", &["full", "d"]);
    assert_eq!(
        out.stderr_str(),
        "mv: cannot move 'full' to 'd/full': Directory not empty\n",
        "{out}"
    );
    let out = as_named(&env, "mv", &["d", "d/full"]);
    assert_eq!(
        out.stderr_str(),
        "mv: cannot move 'd' to a subdirectory of itself, 'd/full/d'\n",
        "{out}"
    );
}

#[test]
fn ctrl_c_cancels_the_copy_exits_130_and_leaves_no_target() {
    let env = TestEnv::start();
    let big = env.path("big");
    fs::write(&big, vec![1u8; 8 << 20]).unwrap();
    let link = env.path(".bin/cp");
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(bins::copyctl(), &link).unwrap();
    let mut child = Command::new(&link)
        .args(["--rate-limit", "1MiB/s", "big", "copy"])
        .current_dir(env.work.path())
        .env("COPYD_ADDRESS", env.address())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let names: Vec<_> = fs::read_dir(env.work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n != "big" && n != ".bin"),
        "{names:?}"
    );
    // The same copy without a rate limit ends on its own, exit 0.
    let out = run_timeout(
        Command::new(&link)
            .args(["big", "copy2"])
            .current_dir(env.work.path())
            .env("COPYD_ADDRESS", env.address()),
        Duration::from_secs(60),
    );
    out.assert_success();
}

/// Runs copyctl as `name` and returns each line of its stdout with when it
/// came, and when the process ended.
fn timed_lines(
    env: &TestEnv,
    name: &str,
    args: &[&str],
) -> (Vec<(std::time::Instant, String)>, std::time::Instant) {
    use std::io::BufRead;
    let mut child = Command::new(named(env, name))
        .args(args)
        .current_dir(env.work.path())
        .env("COPYD_ADDRESS", env.address())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|line| (std::time::Instant::now(), line.unwrap()))
        .collect();
    assert!(child.wait().unwrap().success());
    (lines, std::time::Instant::now())
}

#[test]
fn cp_v_prints_each_file_as_copyd_places_it() {
    // The system bus's own default policy, with copyd's policy file: the
    // FilesPlaced signals, unicast to the job's owner, get through.
    let env = TestEnv::start_with(copyd_tests::Policy::Strict);
    // Into an existing tree: the files copied are listed, not what the
    // destination had before (a listing of the target would show it).
    write(env.path("src/x/f"), "1");
    write(env.path("dst/src/only-here"), "kept");
    let out = cp(&env, &["-rv", "src", "dst"]);
    assert_eq!(
        out.stdout_str(),
        "'src' -> 'dst/src'\n'src/x' -> 'dst/src/x'\n'src/x/f' -> 'dst/src/x/f'\n",
        "{out}"
    );
    // A line comes when its file is placed, while the job goes on: the
    // small file's line well before the slow big file is done.
    write(env.path("small"), "s");
    fs::write(env.path("big"), vec![7u8; 8 << 20]).unwrap();
    fs::create_dir(env.path("out")).unwrap();
    let args = ["-v", "--rate-limit", "4MiB/s", "small", "big", "out"];
    let (lines, ended) = timed_lines(&env, "cp", &args);
    let texts: Vec<&str> = lines.iter().map(|(_, text)| text.as_str()).collect();
    assert_eq!(texts, ["'small' -> 'out/small'", "'big' -> 'out/big'"]);
    let early = ended.duration_since(lines[0].0);
    assert!(
        early >= Duration::from_millis(800),
        "the first line came only {early:?} before the end"
    );
}

#[test]
fn mv_v_across_file_systems_says_what_gnu_mv_says() {
    let env = TestEnv::start();
    // Another file system than the test's directory.
    let other = copyd_tests::mounts::Tmpfs::mount(&env.path("other"));
    write(env.path("d/f"), "f");
    let to = other.path().join("d");
    let out = as_named(&env, "mv", &["-v", "d", other.path().to_str().unwrap()]);
    let to = to.display();
    assert_eq!(
        out.stdout_str(),
        format!(
            "created directory '{to}'\ncopied 'd/f' -> '{to}/f'\nremoved 'd/f'\nremoved directory 'd'\n"
        ),
        "{out}"
    );
    assert!(!env.path("d").exists());
    assert_eq!(read(other.path().join("d/f")), "f");
}

/// Makes a fifo at `path` and, on a thread, writes `text` into it once a
/// reader opens it.
fn fifo_with(path: PathBuf, text: &'static str) {
    run(Command::new("mkfifo").arg(&path)).assert_success();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut fifo = fs::OpenOptions::new().write(true).open(path).unwrap();
        fifo.write_all(text.as_bytes()).unwrap();
    });
}

#[test]
fn cp_copy_contents_reads_fifos_and_devices_as_files() {
    use std::os::unix::fs::FileTypeExt;
    let env = TestEnv::start();
    write(env.path("src/f"), "file");
    fifo_with(env.path("src/p"), "piped");
    let out = cp(&env, &["-rv", "--copy-contents", "src", "dst"]);
    out.assert_success();
    let copied = fs::symlink_metadata(env.path("dst/p")).unwrap();
    assert!(copied.is_file(), "{:?}: {out}", copied.file_type());
    assert_eq!(read(env.path("dst/p")), "piped");
    assert_eq!(read(env.path("dst/f")), "file");
    assert!(out.stdout_str().contains("'src/p' -> 'dst/p'\n"), "{out}");
    // Without it, -r copies the fifo as a fifo (and never opens it).
    cp(&env, &["-r", "src", "plain"]).assert_success();
    let plain = fs::symlink_metadata(env.path("plain/p")).unwrap();
    assert!(plain.file_type().is_fifo());
    // A device operand: read as a file too (/dev/null: empty), and without
    // -r a fifo is read as cp reads it.
    cp(&env, &["-r", "--copy-contents", "/dev/null", "null"]).assert_success();
    let null = fs::symlink_metadata(env.path("null")).unwrap();
    assert!(null.is_file() && null.len() == 0);
    fifo_with(env.path("q"), "again");
    cp(&env, &["q", "from-q"]).assert_success();
    assert_eq!(read(env.path("from-q")), "again");

    // While cp reads the fifo, the directory it made for it is its
    // owner's alone (GNU's parent-perm-race.sh); it gets its mode after.
    fs::create_dir(env.path("slow")).unwrap();
    run(Command::new("mkfifo").arg(env.path("slow/p"))).assert_success();
    let (dir, fifo) = (env.path("slow-copy"), env.path("slow/p"));
    let watcher = std::thread::spawn(move || {
        use std::io::Write;
        // Opening blocks until cp opens the fifo to read it.
        let mut writer = fs::OpenOptions::new().write(true).open(fifo).unwrap();
        let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        writer.write_all(b"late").unwrap();
        mode
    });
    cp(&env, &["-r", "--copy-contents", "slow", "slow-copy"]).assert_success();
    assert_eq!(watcher.join().unwrap(), 0o700);
    assert_eq!(read(env.path("slow-copy/p")), "late");
    assert_eq!(
        fs::metadata(env.path("slow-copy")).unwrap().mode() & 0o777,
        0o755
    );
}

/// Each entry under `root`: its path, kind, mode, size (files) and link
/// target (symlinks), for comparing two trees.
fn shape(root: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            let kind = meta.file_type();
            let what = if kind.is_dir() {
                dirs.push(path.clone());
                "dir".to_owned()
            } else if kind.is_symlink() {
                format!("link to {}", fs::read_link(&path).unwrap().display())
            } else if kind.is_file() {
                format!("file of {}", meta.len())
            } else {
                "special".to_owned()
            };
            let mode = meta.permissions().mode() & 0o7777;
            out.push(format!("{relative}: {what}, {mode:o}"));
        }
    }
    out.sort();
    out
}

#[test]
fn cp_attributes_only_on_a_tree_makes_what_gnu_cp_makes() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::start();
    write(env.path("s/d/f"), "hello");
    write(env.path("s/g"), "x");
    fs::set_permissions(env.path("s/g"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("g", env.path("s/l")).unwrap();
    run(Command::new("mkfifo").arg(env.path("s/p"))).assert_success();
    let old = filetime(env.path("s/g"), 1_000_000_000);
    for (ours, theirs) in [("t1", "g1"), ("t2", "g2")] {
        // Into a tree that exists: its file keeps its data and its mode.
        for existing in [ours, theirs] {
            write(env.path(format!("{existing}/g")), "old data");
            let mode = fs::Permissions::from_mode(0o604);
            fs::set_permissions(env.path(format!("{existing}/g")), mode).unwrap();
        }
    }
    cp(&env, &["-r", "--attributes-only", "s", "new"]).assert_success();
    cp(&env, &["-r", "--attributes-only", "s/.", "t1"]).assert_success();
    cp(&env, &["-a", "--attributes-only", "s/.", "t2"]).assert_success();
    let gnu = |args: &[&str]| {
        run(Command::new("/bin/cp")
            .args(args)
            .current_dir(env.work.path()))
        .assert_success();
    };
    gnu(&["-r", "--attributes-only", "s", "gnew"]);
    gnu(&["-r", "--attributes-only", "s/.", "g1"]);
    gnu(&["-a", "--attributes-only", "s/.", "g2"]);
    for (ours, theirs) in [("new", "gnew"), ("t1", "g1"), ("t2", "g2")] {
        assert_eq!(shape(&env.path(ours)), shape(&env.path(theirs)), "{ours}");
    }
    assert_eq!(
        shape(&env.path("new")).len(),
        5,
        "{:?}",
        shape(&env.path("new"))
    );
    assert_eq!(read(env.path("t1/g")), "old data");
    assert_eq!(fs::metadata(env.path("t2/g")).unwrap().mtime(), old);
}

#[test]
fn cp_over_an_existing_file_keeps_its_mode_and_owner_unless_p() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::start();
    let root = rustix::process::getuid().is_root();
    let mode_of = |path: &str| fs::metadata(env.path(path)).unwrap().mode() & 0o7777;
    let old_file = |path: &str| {
        let path = write(env.path(path), "old");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        if root {
            // nobody's: cp as root writes into it, and it stays nobody's.
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        }
    };
    write(env.path("src"), "new");
    write(env.path("other"), "other");
    fs::set_permissions(env.path("src"), fs::Permissions::from_mode(0o755)).unwrap();
    // One file, two files in a group, a file of a tree merged into.
    old_file("one");
    fs::create_dir(env.path("dir")).unwrap();
    old_file("dir/src");
    old_file("tree/s/src");
    fs::create_dir(env.path("s")).unwrap();
    fs::copy(env.path("src"), env.path("s/src")).unwrap();
    cp(&env, &["src", "one"]).assert_success();
    cp(&env, &["src", "other", "dir"]).assert_success();
    cp(&env, &["-r", "s", "tree"]).assert_success();
    for path in ["one", "dir/src", "tree/s/src"] {
        assert_eq!(read(env.path(path)), "new", "{path}");
        assert_eq!(mode_of(path), 0o600, "{path}");
        if root {
            assert_eq!(fs::metadata(env.path(path)).unwrap().uid(), 65534, "{path}");
        }
    }
    // A new file has the source's mode (less the umask), as before.
    assert_eq!(mode_of("dir/other"), 0o644);
    // -p: the source's mode and owner replace the old file's.
    old_file("kept");
    cp(&env, &["-p", "src", "kept"]).assert_success();
    assert_eq!(mode_of("kept"), 0o755);
    if root {
        assert_eq!(fs::metadata(env.path("kept")).unwrap().uid(), 0);
    }
}

#[test]
fn cp_au_into_a_tree_keeps_names_of_one_file_one_file() {
    let env = TestEnv::start();
    let same_inode = |a: &str, b: &str| {
        let (a, b) = (env.path(a), env.path(b));
        fs::metadata(a).unwrap().ino() == fs::metadata(b).unwrap().ino()
    };
    write(env.path("s/f"), "");
    for name in ["linkm", "linke", "fileo", "fileu"] {
        fs::hard_link(env.path("s/f"), env.path(format!("s/{name}"))).unwrap();
    }
    // In the destination: f itself (newer: -u keeps it), a link of it, an
    // older and a newer separate file.
    write(env.path("t/s/f"), "");
    fs::hard_link(env.path("t/s/f"), env.path("t/s/linke")).unwrap();
    write(env.path("t/s/fileo"), "");
    filetime(env.path("t/s/fileo"), 1_000_000_000);
    write(env.path("t/s/fileu"), "");
    filetime(env.path("t/s/fileu"), 4_000_000_000);
    cp(&env, &["-au", "s", "t"]).assert_success();
    for name in ["linkm", "linke", "fileo", "fileu"] {
        assert!(same_inode("t/s/f", &format!("t/s/{name}")), "{name}");
    }
    let names: Vec<_> = fs::read_dir(env.path("t/s")).unwrap().collect();
    assert_eq!(names.len(), 5, "no temporary left: {names:?}");
}
