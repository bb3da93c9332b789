//! A build with no change compiles nothing. uring-sys2's build script used
//! to rewrite liburing's headers in OUT_DIR on every run (bindgen watches
//! them), so every build and test run recompiled uring-sys2, the engine, the
//! daemon and copyctl; the workspace now patches it (third_party/uring-sys2).

use std::process::Command;
use std::time::Duration;

use copyd_tests::cmd::run_timeout;
use copyd_tests::repo_root;

#[test]
fn a_second_build_with_no_change_compiles_nothing() {
    // The binaries this test run uses are built already (cargo test builds
    // them for the end-to-end tests), so this build has nothing to do; the
    // first one makes sure of that when this test runs on its own.
    let build = || {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(repo_root())
            .args(["build", "-v", "-p", "copyd-service", "-p", "copyctl"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        run_timeout(&mut cmd, Duration::from_secs(900))
    };
    build().assert_success();
    let second = build();
    second.assert_success();
    let log = second.stderr_str();
    let work: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("Compiling") || l.trim_start().starts_with("Running")
        })
        .collect();
    assert!(work.is_empty(), "a no-change build did work:\n{log}");
    assert!(log.contains("Fresh uring-sys2"), "{log}");
}
