//! Fifty SIGKILLs at random moments: copyd is killed while it copies big
//! files, small-file trees, moves across file systems and a non-root user's
//! job, and is started again each time to carry the job on by itself
//! (auto_resume). While it is down, and after each job ends, the test
//! counts what must never happen:
//!
//! - a lost source (a moved file whole in neither place),
//! - a corrupt or partial file under a final name,
//! - a stray temporary once the job is done.
//!
//! It prints the counts (to stderr, uncaptured, so they are in the test
//! log) and asserts each is 0. `COPYD_KILL_SEED` replays a run.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use copyd_tests::busctl::{parse_busctl_object_path, Busctl};
use copyd_tests::mounts::Tmpfs;
use copyd_tests::polkit::{chown, ensure_user, SecureEnv, USER};
use copyd_tests::tree::{copyd_temp_leftovers, make_big_file, make_tree};

/// Kills per scenario: 13 + 13 + 12 + 12 = 50.
const KILLS: [usize; 4] = [13, 13, 12, 12];

#[derive(Default, Debug)]
struct Tally {
    kills: usize,
    jobs: usize,
    lost_sources: usize,
    corrupt_under_final_names: usize,
    stray_temporaries: usize,
}

/// Every regular file and symlink below `root`, with its content (a
/// symlink's target), skipping copyd's temporaries and what is under them.
fn contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(root.join(rel)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if copyd_engine_temp(&name) {
                continue;
            }
            let rel = rel.join(&name);
            let path = root.join(&rel);
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                walk(root, &rel, out);
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap_or_default();
                out.insert(rel, target.into_os_string().into_encoded_bytes());
            } else if let Ok(bytes) = fs::read(&path) {
                out.insert(rel, bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn copyd_engine_temp(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(b".copyd-") && name.ends_with(b".tmp")
}

/// Files under final names in `place` that are not exactly what `want`
/// has at the same path (a file that is not in `want` at all counts too).
fn corrupt_in(place: &BTreeMap<PathBuf, Vec<u8>>, want: &BTreeMap<PathBuf, Vec<u8>>) -> usize {
    place
        .iter()
        .filter(|(path, bytes)| want.get(*path) != Some(bytes))
        .count()
}

/// Starts a scenario's job into the given directory; returns its path.
type StartJob = Box<dyn Fn(&SecureEnv, &Path) -> String>;

/// What one scenario's job copies, and how to judge it.
struct Scenario {
    name: &'static str,
    /// What the sources hold, relative to the directory `into` is
    /// compared with (for a move: the union of source and destination).
    want: BTreeMap<PathBuf, Vec<u8>>,
    /// The destination directory the job's results land in.
    into: PathBuf,
    /// For a move: where the sources stand (compared with `want` too).
    moved_from: Option<PathBuf>,
    start: StartJob,
}

/// Judges the state while copyd is down (or after the job): files under
/// final names must be whole; a moved file must be whole somewhere.
fn judge(scenario: &Scenario, tally: &mut Tally, finished: bool) {
    let at_dest = contents(&scenario.into);
    tally.corrupt_under_final_names += corrupt_in(&at_dest, &scenario.want);
    if let Some(from) = &scenario.moved_from {
        let at_source = contents(from);
        tally.corrupt_under_final_names += corrupt_in(&at_source, &scenario.want);
        for (path, bytes) in &scenario.want {
            let whole = |place: &BTreeMap<PathBuf, Vec<u8>>| place.get(path) == Some(bytes);
            if !whole(&at_dest) && !whole(&at_source) {
                tally.lost_sources += 1;
            }
        }
        assert!(
            !finished || at_source.is_empty(),
            "a completed move left sources: {:?}",
            at_source.keys().take(5).collect::<Vec<_>>()
        );
    }
    if finished {
        let missing = scenario
            .want
            .keys()
            .filter(|path| !at_dest.contains_key(*path))
            .count();
        tally.corrupt_under_final_names += missing;
        let mut stray = copyd_temp_leftovers(&scenario.into).len();
        if let Some(from) = &scenario.moved_from {
            stray += copyd_temp_leftovers(from).len();
        }
        tally.stray_temporaries += stray;
    }
}

/// Runs one scenario's job, killing copyd `kills` times at random moments
/// (starting the job again, into a fresh destination, if it finishes
/// first).
fn run_scenario(
    env: &mut SecureEnv,
    make: &dyn Fn(usize) -> Scenario,
    kills: usize,
    rng: &mut fastrand::Rng,
    tally: &mut Tally,
) {
    let address = env.address().to_owned();
    let busctl = Busctl::new(&address);
    let mut done = 0;
    let mut round = 0;
    while done < kills {
        let scenario = make(round);
        round += 1;
        let job = (scenario.start)(env, &scenario.into);
        tally.jobs += 1;
        loop {
            busctl.wait_job_state(&job, Duration::from_secs(60), |state| {
                state != "queued" && state != "interrupted"
            });
            std::thread::sleep(Duration::from_millis(rng.u64(50..700)));
            let state = busctl.job_state(&job);
            if state != "running" || done == kills {
                break;
            }
            env.daemon
                .crash_and_restart_after(&env.bus, || judge(&scenario, tally, false));
            done += 1;
            tally.kills += 1;
        }
        let state = busctl.wait_job_end(&job, Duration::from_secs(300));
        assert_eq!(
            state,
            "completed",
            "{} (round {round}): {:?}",
            scenario.name,
            busctl.job_prop(&job, "ErrorMessage")
        );
        judge(&scenario, tally, true);
    }
}

fn rate(bytes: u64, seconds: f64) -> String {
    ((bytes as f64 / seconds) as u64).max(1).to_string()
}

#[test]
fn fifty_kills_at_random_moments_lose_and_corrupt_nothing() {
    let Some(mut env) = SecureEnv::start() else {
        return;
    };
    let seed = std::env::var("COPYD_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tally = Tally::default();
    let work = env.path("kills");
    fs::create_dir(&work).unwrap();

    // 1. A big file (48 MiB at 24 MB/s: about 2 s a run), as root.
    let big = work.join("big");
    make_big_file(&big, 48 << 20, seed);
    let big_bytes = fs::read(&big).unwrap();
    let big_dest = work.join("big-copies");
    let big_scenario = |round: usize| {
        let into = big_dest.join(format!("r{round}"));
        fs::create_dir_all(&into).unwrap();
        let source = big.clone();
        Scenario {
            name: "big file",
            want: BTreeMap::from([(PathBuf::from("copy"), big_bytes.clone())]),
            into,
            moved_from: None,
            start: Box::new(move |env, into| {
                Busctl::new(env.address()).copy(
                    &[&source],
                    &into.join("copy"),
                    &["rate-limit", "t", "24000000"],
                )
            }),
        }
    };
    run_scenario(&mut env, &big_scenario, KILLS[0], &mut rng, &mut tally);

    // 2. A tree of 1,500 small files (about 2.5 s a run), as root.
    let tree = work.join("tree");
    let stats = make_tree(&tree, 1_500, seed ^ 1);
    let tree_want: BTreeMap<PathBuf, Vec<u8>> = contents(&tree)
        .into_iter()
        .map(|(path, bytes)| (Path::new("copy").join(path), bytes))
        .collect();
    let tree_rate = rate(stats.bytes, 2.5);
    let tree_dest = work.join("tree-copies");
    let tree_scenario = |round: usize| {
        let into = tree_dest.join(format!("r{round}"));
        fs::create_dir_all(&into).unwrap();
        let (source, rate) = (tree.clone(), tree_rate.clone());
        Scenario {
            name: "small-file tree",
            want: tree_want.clone(),
            into,
            moved_from: None,
            start: Box::new(move |env, into| {
                Busctl::new(env.address()).copy(
                    &[&source],
                    &into.join("copy"),
                    &["recursive", "b", "true", "rate-limit", "t", &rate],
                )
            }),
        }
    };
    run_scenario(&mut env, &tree_scenario, KILLS[1], &mut rng, &mut tally);

    // 3. A move across file systems (tmpfs to /tmp's): 150 lone files of
    // up to 16 kB (grouped) and a tree, about 2.5 s a run, as root.
    let tmpfs = Tmpfs::mount(&env.path("kills-tmpfs"));
    let move_scenario = |round: usize| {
        let from = tmpfs.path().join(format!("r{round}"));
        fs::create_dir_all(&from).unwrap();
        let mut names = Vec::new();
        let mut bytes = 0;
        for i in 0..150 {
            let name = format!("lone-{i:03}");
            let size = 1 + (i * 109) % 16_000;
            fs::write(from.join(&name), vec![(i % 251) as u8; size]).unwrap();
            bytes += size as u64;
            names.push(from.join(name));
        }
        bytes += make_tree(&from.join("tree"), 300, round as u64).bytes;
        names.push(from.join("tree"));
        let want = contents(&from);
        let into = work.join(format!("moved-{round}"));
        fs::create_dir_all(&into).unwrap();
        let rate = rate(bytes, 2.5);
        Scenario {
            name: "cross-file-system move",
            want,
            into,
            moved_from: Some(from),
            start: Box::new(move |env, into| {
                let sources: Vec<&[u8]> = names
                    .iter()
                    .map(|p| copyd_tests::busctl::path_bytes(p))
                    .collect();
                let out = Busctl::new(env.address()).start(
                    "Move",
                    &sources,
                    copyd_tests::busctl::path_bytes(into),
                    &["recursive", "b", "true", "rate-limit", "t", &rate],
                );
                out.assert_success();
                parse_busctl_object_path(&out.stdout_str())
            }),
        }
    };
    run_scenario(&mut env, &move_scenario, KILLS[2], &mut rng, &mut tally);

    // 4. A non-root user's job: a tree with a 12 MiB file in it, in the
    // user's own directory, about 2.5 s a run.
    let user = ensure_user(USER);
    let home = env.user_dir(USER, "kills-home");
    let user_tree = home.join("tree");
    let stats = make_tree(&user_tree, 400, seed ^ 4);
    make_big_file(&user_tree.join("a/big"), 12 << 20, seed ^ 5);
    copyd_tests::cmd::run(std::process::Command::new("chown").args([
        "-R",
        &format!("{}:{}", user.uid, user.gid),
        user_tree.to_str().unwrap(),
    ]))
    .assert_success();
    let user_want: BTreeMap<PathBuf, Vec<u8>> = contents(&user_tree)
        .into_iter()
        .map(|(path, bytes)| (Path::new("copy").join(path), bytes))
        .collect();
    let user_rate = rate(stats.bytes + (12 << 20), 2.5);
    let user_scenario = |round: usize| {
        let into = home.join(format!("r{round}"));
        fs::create_dir_all(&into).unwrap();
        chown(&into, user);
        let (source, rate) = (user_tree.clone(), user_rate.clone());
        Scenario {
            name: "a user's tree",
            want: user_want.clone(),
            into,
            moved_from: None,
            start: Box::new(move |env, into| {
                let out = env.start_as(
                    USER,
                    "Copy",
                    &[&source],
                    &into.join("copy"),
                    &["recursive", "b", "true", "rate-limit", "t", &rate],
                );
                out.assert_success();
                parse_busctl_object_path(&out.stdout_str())
            }),
        }
    };
    run_scenario(&mut env, &user_scenario, KILLS[3], &mut rng, &mut tally);
    // The user's copies belong to the user.
    for entry in fs::read_dir(&home).unwrap().flatten() {
        let copy = entry.path().join("copy");
        if copy.exists() {
            assert_eq!(fs::metadata(&copy).unwrap().uid(), user.uid);
        }
    }

    let _ = writeln!(
        std::io::stderr(),
        "kill points: {} (seed {seed}) over {} jobs; lost sources: {}; corrupt or partial \
         files under final names: {}; stray temporaries: {}",
        tally.kills,
        tally.jobs,
        tally.lost_sources,
        tally.corrupt_under_final_names,
        tally.stray_temporaries
    );
    assert_eq!(tally.kills, KILLS.iter().sum::<usize>());
    assert_eq!(
        (
            tally.lost_sources,
            tally.corrupt_under_final_names,
            tally.stray_temporaries
        ),
        (0, 0, 0),
        "seed {seed}: {tally:?}"
    );
}
