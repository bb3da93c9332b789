//! `copyctl copy --verify`, its report and `--manifest`, through the
//! daemon: the digests are those sha256sum, md5sum and Python's zlib.crc32
//! compute, and a manifest is one those tools check.

use std::fs;
use std::path::Path;
use std::process::Command;

use copyd_tests::cmd::run;
use copyd_tests::TestEnv;

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(seed) >> 29) as u8)
        .collect()
}

/// The digest `tool` (sha256sum, md5sum, or crc32 by Python's zlib) gives
/// `path`.
fn digest_by_tool(method: &str, path: &Path) -> String {
    let out = match method {
        "crc32" => run(Command::new("python3").args([
            "-c",
            "import sys, zlib\nc = 0\nwith open(sys.argv[1], 'rb') as f:\n    for b in iter(lambda: f.read(1 << 20), b''):\n        c = zlib.crc32(b, c)\nprint('%08x' % c)",
            path.to_str().unwrap(),
        ])),
        tool => run(Command::new(format!("{tool}sum")).arg(path)),
    };
    out.assert_success();
    // (A name with a backslash makes the tools start the line with one.)
    let first = out
        .stdout_str()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    first.trim_start_matches('\\').to_owned()
}

#[test]
fn a_single_file_prints_its_digest_as_the_tools_do() {
    let env = TestEnv::start();
    for (name, len) in [("empty", 0), ("one", 1), ("mib", (1 << 20) + 1)] {
        let source = env.path(name);
        fs::write(&source, pattern(len, len as u64)).unwrap();
        for method in ["crc32", "md5", "sha256"] {
            let copy = env.path(format!("{name}.{method}"));
            let out = env.copyctl(&[
                "copy".as_ref(),
                "--verify".as_ref(),
                method.as_ref(),
                source.as_os_str(),
                copy.as_os_str(),
            ]);
            out.assert_success();
            let want = digest_by_tool(method, &source);
            assert_eq!(digest_by_tool(method, &copy), want);
            // As `sha256sum COPY` prints it.
            assert_eq!(
                out.stdout_str().trim_end(),
                format!("{want}  {}", copy.display()),
                "{name} by {method}"
            );
        }
    }
}

#[test]
fn a_tree_writes_a_manifest_the_tools_check() {
    let env = TestEnv::start();
    let source = env.path("tree");
    fs::create_dir_all(source.join("d/e")).unwrap();
    let names = ["a", "d/b c", "d/e/f", "d/e/back\\slash", "d/empty"];
    for (i, name) in names.iter().enumerate() {
        let len = [5000, 1 << 20, 3, 70_000, 0][i];
        fs::write(source.join(name), pattern(len, i as u64)).unwrap();
    }
    for method in ["md5", "sha256", "crc32"] {
        let copy = env.path(format!("copy-{method}"));
        let manifest = env.path(format!("{method}.manifest"));
        let out = env.copyctl(&[
            "copy".as_ref(),
            "-r".as_ref(),
            "--verify".as_ref(),
            method.as_ref(),
            "--manifest".as_ref(),
            manifest.as_os_str(),
            source.as_os_str(),
            copy.as_os_str(),
        ]);
        out.assert_success();
        assert!(
            out.stdout_str()
                .starts_with(&format!("verified 5 files by {method}:")),
            "{}",
            out.stdout_str()
        );
        let text = fs::read_to_string(&manifest).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        match method {
            "crc32" => {
                // The documented format: 8 hex digits, two spaces, the
                // path (backslash-escaped as sha256sum does).
                for line in text.lines() {
                    let (escaped, line) = match line.strip_prefix('\\') {
                        Some(rest) => (true, rest),
                        None => (false, line),
                    };
                    let (digest, path) = line.split_once("  ").unwrap();
                    let path = match escaped {
                        true => path.replace("\\\\", "\\").replace("\\n", "\n"),
                        false => path.to_owned(),
                    };
                    assert_eq!(digest, digest_by_tool("crc32", Path::new(&path)), "{line}");
                }
            }
            tool => {
                let check = run(Command::new(format!("{tool}sum"))
                    .arg("--check")
                    .arg("--strict")
                    .arg(&manifest));
                check.assert_success();
                assert_eq!(check.stdout_str().matches(": OK").count(), 5);
            }
        }
    }
    // --json carries every digest.
    let copy = env.path("copy-json");
    let out = env.copyctl(&[
        "--json".as_ref(),
        "copy".as_ref(),
        "-r".as_ref(),
        "--verify".as_ref(),
        "sha256".as_ref(),
        source.as_os_str(),
        copy.as_os_str(),
    ]);
    out.assert_success();
    let summary: serde_json::Value =
        serde_json::from_str(out.stdout_str().lines().last().unwrap()).unwrap();
    let checksums = summary["checksums"].as_array().unwrap();
    assert_eq!(checksums.len(), 5);
    for checksum in checksums {
        let path = Path::new(checksum["path"].as_str().unwrap());
        assert_eq!(checksum["digest"], digest_by_tool("sha256", path).as_str());
        assert_eq!(checksum["shared"], false);
    }
    assert_eq!(summary["verify"], "sha256");
}

#[test]
fn a_digest_with_an_engine_that_never_sees_the_bytes_is_refused_and_nothing_changes() {
    let env = TestEnv::start();
    let source = env.path("f");
    fs::write(&source, b"data").unwrap();
    for engine in ["splice", "copy_file_range"] {
        let copy = env.path(format!("copy-{engine}"));
        let out = env.copyctl(&[
            "copy".as_ref(),
            "--verify".as_ref(),
            "sha256".as_ref(),
            "--engine".as_ref(),
            engine.as_ref(),
            source.as_os_str(),
            copy.as_os_str(),
        ]);
        assert!(!out.success());
        assert!(
            out.stderr_str().contains("Error.InvalidArgument")
                && out.stderr_str().contains("cannot verify"),
            "{}",
            out.stderr_str()
        );
        assert!(!copy.exists());
    }
    let out = env.copyctl(&[
        "copy".as_ref(),
        "--manifest".as_ref(),
        env.path("m").as_os_str(),
        source.as_os_str(),
        env.path("copy").as_os_str(),
    ]);
    assert!(!out.success());
    assert!(
        out.stderr_str().contains("--manifest needs --verify"),
        "{}",
        out.stderr_str()
    );
    assert!(!env.path("copy").exists() && !env.path("m").exists());
}

#[test]
fn verify_size_and_the_client_default_method() {
    let env = TestEnv::start();
    let source = env.path("f");
    fs::write(&source, pattern(100_000, 3)).unwrap();
    env.copyctl(&[
        "copy".as_ref(),
        "--verify".as_ref(),
        "size".as_ref(),
        source.as_os_str(),
        env.path("sized").as_os_str(),
    ])
    .assert_success();
    assert_eq!(
        fs::read(env.path("sized")).unwrap(),
        fs::read(&source).unwrap()
    );
    // [client] default_verify_method stands in for --verify.
    let config = env.path("copyctl.toml");
    fs::write(&config, "[client]\ndefault_verify_method = \"md5\"\n").unwrap();
    let copy = env.path("by-default");
    let out = env.copyctl(&[
        "--config".as_ref(),
        config.as_os_str(),
        "copy".as_ref(),
        source.as_os_str(),
        copy.as_os_str(),
    ]);
    out.assert_success();
    assert_eq!(
        out.stdout_str().trim_end(),
        format!("{}  {}", digest_by_tool("md5", &source), copy.display())
    );
}
