//! Renaming on the way (`rename`, `rename-dirs`, `copyctl --rename`) and
//! the dry run (`copyctl copy --dry-run`), through the daemon.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use copyd_tests::busctl::{path_bytes, Busctl};
use copyd_tests::tree::{make_tree, snapshot, Entry};
use copyd_tests::{Daemon, Policy, TestBus, TestEnv};

/// The rule every test uses: `file-0042.dat` becomes `0042.copy`.
const RULE: &str = r"s/^file-(\d+)\.dat$/\1.copy/";

/// What RULE does to a name, computed without a regex.
fn expected_name(name: &str) -> String {
    match name
        .strip_prefix("file-")
        .and_then(|n| n.strip_suffix(".dat"))
    {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{digits}.copy")
        }
        _ => name.to_owned(),
    }
}

/// `source`'s snapshot with RULE applied to the last name of every path
/// that is not a directory (directories keep theirs).
fn expected_tree(source: &Path) -> BTreeMap<PathBuf, (Entry, PathBuf)> {
    snapshot(source)
        .into_iter()
        .map(|(path, entry)| {
            let renamed = match entry {
                Entry::Dir { .. } => path.clone(),
                // (A name that is not UTF-8, such as b"caf\xe9.txt", cannot
                // match the rule: it keeps its bytes.)
                _ => match path.file_name().unwrap().to_str() {
                    Some(name) => path.with_file_name(expected_name(name)),
                    None => path.clone(),
                },
            };
            (renamed, (entry, path))
        })
        .collect()
}

fn assert_renamed_copy(source: &Path, copy: &Path) {
    let want = expected_tree(source);
    let got = snapshot(copy);
    let missing: Vec<_> = want.keys().filter(|p| !got.contains_key(*p)).collect();
    let extra: Vec<_> = got.keys().filter(|p| !want.contains_key(*p)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "names expected but not in the copy: {missing:?}; in the copy but not expected: {extra:?}"
    );
    for (path, (entry, from)) in &want {
        assert_eq!(&got[path], entry, "{}", path.display());
        if matches!(entry, Entry::File { .. }) {
            assert_eq!(
                fs::read(copy.join(path)).unwrap(),
                fs::read(source.join(from)).unwrap(),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn renaming_a_tree_of_a_thousand_files_gives_the_expected_names() {
    let env = TestEnv::start();
    let source = env.path("src");
    make_tree(&source, 1_000, 11);
    let copy = env.path("copy");
    let out = env.copyctl(&[
        "copy".as_ref(),
        "-r".as_ref(),
        "--rename".as_ref(),
        RULE.as_ref(),
        source.as_os_str(),
        copy.as_os_str(),
    ]);
    out.assert_success();
    assert_renamed_copy(&source, &copy);
    // Several files into a directory: their own names change too, and
    // with --rename-dirs the directories' as well.
    let into = env.path("into");
    fs::create_dir(&into).unwrap();
    let out = env.copyctl(&[
        "copy".as_ref(),
        "-r".as_ref(),
        "--rename".as_ref(),
        "s/e/E/g".as_ref(),
        "--rename-dirs".as_ref(),
        source.join("e").as_os_str(),
        source.join("a/target.txt").as_os_str(),
        into.as_os_str(),
    ]);
    out.assert_success();
    assert!(
        into.join("E/f/privatE.txt").is_file(),
        "{:?}",
        snapshot(&into)
    );
    assert!(into.join("targEt.txt").is_file());
    assert!(into.join("E/dangling-link").symlink_metadata().is_ok());
}

/// Each bad rule or bad result: InvalidArgument naming the option or the
/// offenders, no job, and nothing created.
#[test]
fn renames_that_cannot_work_are_refused_before_anything_exists() {
    let env = TestEnv::start();
    let source = env.path("src");
    fs::create_dir_all(source.join("d")).unwrap();
    for name in ["a1", "a2", "d/x1", "d/x2", "b"] {
        fs::write(source.join(name), name).unwrap();
    }
    let dest = env.path("dest");
    fs::create_dir(&dest).unwrap();
    let cases: Vec<(Vec<PathBuf>, &str, &str)> = vec![
        (vec![source.join("b")], "s/b//", "is empty"),
        (vec![source.join("b")], "s/b/../", "is . or .."),
        (vec![source.join("b")], "s|b|x/y|", "contains /"),
        (
            vec![source.join("a1"), source.join("a2")],
            "s/[0-9]//",
            "again",
        ),
        (vec![source.join("d")], "s/[0-9]$//", "again"),
        (vec![source.join("b")], "s/(/x/", "invalid regex"),
        (vec![source.join("b")], "s/b/c/z", "unknown flag"),
        (vec![source.join("b")], "b/c", "does not start with s"),
        (vec![source.join("b")], "s/b/c", "three parts"),
    ];
    let busctl = env.busctl();
    for (sources, rule, why) in cases {
        let mut args: Vec<std::ffi::OsString> =
            vec!["copy".into(), "-r".into(), "--rename".into(), rule.into()];
        args.extend(sources.iter().map(|p| p.clone().into_os_string()));
        args.push(dest.clone().into_os_string());
        let out = env.copyctl(&args);
        assert!(!out.success(), "{rule}: a job was made");
        let stderr = out.stderr_str();
        assert!(
            stderr.contains("copyctl: org.example.Copyd1.Error.InvalidArgument: "),
            "{rule}: {stderr}"
        );
        assert!(stderr.contains(why), "{rule}: {stderr}");
    }
    let out = busctl.start(
        "Copy",
        &[path_bytes(&source.join("b"))],
        path_bytes(&dest),
        &["rename-dirs", "b", "true"],
    );
    assert!(!out.success() && out.stderr_str().contains("rename-dirs"));
    assert_eq!(
        fs::read_dir(&dest).unwrap().count(),
        0,
        "something was created"
    );
    let jobs = busctl.call_json(
        copyd_tests::MANAGER_PATH,
        copyd_tests::MANAGER_IFACE,
        "ListJobs",
        "",
        &[],
    );
    assert_eq!(
        jobs["data"][0],
        serde_json::json!([]),
        "jobs were made: {jobs}"
    );
}

/// The dry run names every file the copy will rename, touches nothing (not
/// even the destination directory's times), and the copy then does what it
/// said.
#[test]
fn a_dry_run_says_what_the_copy_then_does() {
    let env = TestEnv::start();
    let source = env.path("src");
    let stats = make_tree(&source, 200, 12);
    let dest = env.path("dest");
    fs::create_dir(&dest).unwrap();
    let times = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
    };
    let before = times(&dest);
    let args = |dry: bool| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--json".into(),
            "copy".into(),
            "-r".into(),
            "--rename".into(),
            RULE.into(),
        ];
        if dry {
            args.push("--dry-run".into());
        }
        args.push(source.clone().into());
        args.push(dest.clone().into());
        args
    };
    let plan = env.copyctl(&args(true));
    plan.assert_success();
    let report = plan.json();
    assert_eq!(times(&dest), before, "the dry run touched the destination");
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
    let renamed: Vec<String> = report["renamed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect();
    let dat_files = snapshot(&source)
        .keys()
        .filter(|p| p.to_string_lossy().ends_with(".dat"))
        .count();
    assert_eq!(renamed.len(), dat_files, "{report}");
    assert_eq!(report["files"], stats.files, "{report}");

    env.copyctl(&args(false)).assert_success();
    for path in &renamed {
        assert!(Path::new(path).is_file(), "planned but not made: {path}");
    }
    let copied_files = snapshot(&dest.join("src"))
        .values()
        .filter(|e| matches!(e, Entry::File { .. }))
        .count() as u64;
    assert_eq!(copied_files, stats.files);
    assert_renamed_copy(&source, &dest.join("src"));
}

/// Killed with SIGKILL midway and carried on after the restart, the job
/// names every file as the rule says: the rule is in its checkpoint.
#[test]
fn a_resumed_job_keeps_the_renamed_names() {
    let bus = TestBus::start(Policy::Permissive);
    let mut daemon = Daemon::start(&bus);
    let work = copyd_tests::scratch_dir("rename-resume");
    let source = work.path().join("src");
    let stats = make_tree(&source, 600, 13);
    let copy = work.path().join("copy");
    let busctl = Busctl::new(bus.address());
    let rate = (stats.bytes / 4).to_string();
    let job = busctl.copy(
        &[&source],
        &copy,
        &[
            "recursive",
            "b",
            "true",
            "rename",
            "s",
            RULE,
            "rate-limit",
            "t",
            &rate,
        ],
    );
    busctl.wait_job_state(&job, Duration::from_secs(30), |_| {
        busctl.job_u64(&job, "FilesDone") > 200
    });
    daemon.crash_and_restart(&bus);
    assert_eq!(
        busctl.wait_job_end(&job, Duration::from_secs(120)),
        "completed",
        "{:?}",
        busctl.job_prop(&job, "ErrorMessage")
    );
    assert_renamed_copy(&source, &copy);
}

/// The dry run's estimate: at the rate limit when one is set, else at the
/// median rate of copyd's recent jobs, else unknown.
#[test]
fn a_dry_run_estimates_how_long_the_copy_takes() {
    let env = TestEnv::start();
    let big = env.path("big");
    copyd_tests::tree::make_big_file(&big, 8 << 20, 3);
    let plan = |extra: &[&str]| {
        let mut args = vec!["--json", "copy", "--dry-run"];
        args.extend(extra);
        let (big, to) = (big.to_str().unwrap(), env.path("to"));
        let mut args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        args.push(big.into());
        args.push(to.into());
        let out = env.copyctl(&args);
        out.assert_success();
        out.json()
    };
    let unknown = plan(&[]);
    assert_eq!(unknown["estimated-from"], "", "{unknown}");
    assert_eq!(unknown["estimated-seconds"], 0);
    let limited = plan(&["--rate-limit", "1MB/s"]);
    assert_eq!(limited["estimated-from"], "rate-limit");
    assert_eq!(
        limited["estimated-seconds"],
        (8u64 << 20).div_ceil(1_000_000)
    );
    env.copyctl(
        &[big.as_os_str(), env.path("first").as_os_str()]
            .iter()
            .fold(vec![std::ffi::OsString::from("copy")], |mut args, a| {
                args.push(a.into());
                args
            }),
    )
    .assert_success();
    let learned = plan(&[]);
    assert_eq!(learned["estimated-from"], "recent-jobs", "{learned}");
    assert!(learned["estimated-seconds"].as_u64().unwrap() >= 1);
}
