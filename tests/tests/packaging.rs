//! The files copyd ships beside its binaries, checked by the tools that read
//! them: the bus policy and activation file on a real dbus-daemon (a
//! call from `nobody` activates copyd), the polkit policy and rules on a real
//! polkitd, the systemd unit with systemd-analyze, and the .deb, .rpm and
//! tarball recipes, built from this build's binaries and inspected.

use std::path::Path;
use std::process::Command;

use copyd_tests::cmd::run_timeout;
use copyd_tests::{bins, repo_root};

fn script(path: &str) -> Command {
    let mut command = Command::new("bash");
    command.arg(repo_root().join(path));
    command
}

fn profile_of(binary: &Path) -> String {
    binary
        .parent()
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .expect("binaries live in target/<profile>/")
}

#[test]
fn bus_policy_and_activation_work_on_a_real_bus() {
    let out = run_timeout(
        script("dbus/check-policy.sh").env("COPYD_BIN", bins::copyd()),
        std::time::Duration::from_secs(120),
    );
    out.assert_success();
    assert!(
        out.stdout_str().contains("activated the real copyd"),
        "{}",
        out.stdout_str()
    );
}

#[test]
fn polkit_policy_and_rules_load_in_polkitd() {
    let out = run_timeout(
        &mut script("polkit/check-polkit.sh"),
        std::time::Duration::from_secs(120),
    );
    out.assert_success();
    let text = out.stdout_str();
    assert!(!text.contains("FAIL - "), "{text}");
    // The real polkitd part ran (it is skipped without root or polkitd).
    assert!(
        text.contains("ok   - pkcheck"),
        "polkitd was not exercised:\n{text}"
    );
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    // verify wants ExecStart's binary to exist: point a copy of the unit at
    // this build's copyd.
    let dir = copyd_tests::scratch_dir("unit");
    let unit = std::fs::read_to_string(repo_root().join("systemd/copyd.service")).unwrap();
    let unit = unit.replace(
        "/usr/libexec/copyd/copyd",
        &bins::copyd().display().to_string(),
    );
    let path = dir.path().join("copyd.service");
    std::fs::write(&path, unit).unwrap();
    let out = run_timeout(
        Command::new("systemd-analyze").arg("verify").arg(&path),
        std::time::Duration::from_secs(60),
    );
    out.assert_success();
    assert!(
        out.stderr_str().trim().is_empty(),
        "verify complained:\n{}",
        out.stderr_str()
    );

    let out = run_timeout(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(repo_root().join("systemd/copyd.service")),
        std::time::Duration::from_secs(60),
    );
    let text = out.stdout_str();
    let score: f64 = text
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for copyd.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(
        score <= 3.0,
        "the unit's exposure rose to {score} (it is 2.2)"
    );
}

#[test]
fn deb_rpm_and_tarball_recipes_build_and_hold_the_right_files() {
    let out_dir = copyd_tests::scratch_dir("packages");
    let out = run_timeout(
        script("packaging/check.sh")
            .env("PROFILE", profile_of(&bins::copyd()))
            .env("OUT_DIR", out_dir.path()),
        std::time::Duration::from_secs(600),
    );
    out.assert_success();
    let text = out.stdout_str();
    assert!(!text.contains("FAIL - "), "{text}");
    assert!(text.contains("ok   - deb has the full tree"), "{text}");
    assert!(text.contains("ok   - tarball has the full tree"), "{text}");
    // lintian's and rpmlint's verdicts go to the test log even when the
    // test passes: written to the real stderr, which the test harness does
    // not capture (it captures only the print macros).
    let report: String = text
        .lines()
        .filter(|l| l.contains("lintian") || l.contains("rpmlint"))
        .map(|l| format!("packaging: {l}\n"))
        .collect();
    let _ = std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes());
    if std::env::var_os("CI").is_some() {
        // .ci/run installs both: their checks must have run, with 0 errors.
        assert!(text.contains("ok   - lintian: 0 errors"), "{text}");
        assert!(
            text.contains("ok   - rpmlint: ") && text.contains(" 0 errors,"),
            "{text}"
        );
    }
}

/// The fields of `pub struct NAME { ... }` in config.rs.
fn struct_fields(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("no struct {name} in the config's source"));
    let body = &source[start..];
    let body = &body[..body.find("\n}").unwrap()];
    body.lines()
        .map(|l| l.trim())
        .filter(|l| !l.starts_with("//") && !l.starts_with('#'))
        .map(|l| l.strip_prefix("pub ").unwrap_or(l))
        .filter_map(|l| l.split_once(':').map(|(f, _)| f.trim().to_string()))
        .filter(|f| !f.contains(' '))
        .collect()
}

#[test]
fn copyd_conf_5_documents_every_configuration_key() {
    let out = run_timeout(
        script("packaging/config-man.sh")
            .arg(repo_root().join("packaging/config.toml"))
            .arg("0.0.0"),
        std::time::Duration::from_secs(60),
    );
    out.assert_success();
    let page = out.stdout_str();
    // The file's own definition: each table of copyd-service/src/config/file.rs.
    let source =
        std::fs::read_to_string(repo_root().join("copyd-service/src/config/file.rs")).unwrap();
    let mut missing = Vec::new();
    for (strukt, section) in [
        ("DaemonTable", "daemon"),
        ("EngineTable", "engine"),
        ("PerformanceTable", "performance"),
        ("SecurityTable", "security"),
        ("MonitoringTable", "monitoring"),
    ] {
        if !page.contains(&format!(".SH \"SECTION [{section}]\"")) {
            missing.push(format!("[{section}]"));
        }
        for field in struct_fields(&source, strukt) {
            // A key may also be documented as another's older name.
            let alias = format!("{field} is the same key");
            if !page.contains(&format!("\\fB{field}\\fR = ")) && !page.contains(&alias) {
                missing.push(format!("[{section}] {field}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "copyd.conf(5) (from packaging/config.toml) lacks {missing:?}: document them in the sample"
    );
    // And it renders.
    let dir = copyd_tests::scratch_dir("man5");
    let path = dir.path().join("copyd.conf.5");
    std::fs::write(&path, &page).unwrap();
    let man = run_timeout(
        Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80"),
        std::time::Duration::from_secs(60),
    );
    man.assert_success();
    assert!(man.stderr_str().trim().is_empty(), "{man}");
    assert!(man.stdout_str().contains("max_concurrent_jobs"), "{man}");
}
