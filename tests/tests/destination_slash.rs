//! A destination written `DIR/` must be an existing directory, as with cp:
//! through copyctl and as raw `ay` bytes on the bus, the slash reaches the
//! check, the error is typed and nothing is created.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use copyd_tests::busctl::{gdbus_call, gdbus_error_name, gvariant_ay};
use copyd_tests::{osargs, TestEnv, MANAGER_IFACE, MANAGER_PATH};

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn copyctl_to_a_missing_directory_with_a_slash_fails_not_found() {
    let env = TestEnv::start();
    let source = env.path("big.iso");
    fs::write(&source, vec![7u8; 200_000]).unwrap();
    let mut destination = env.path("backup").into_os_string();
    destination.push("/");
    let out = env.copyctl(&osargs!["copy", &source, &destination]);
    out.assert_failure();
    assert!(
        out.stderr_str()
            .contains("org.example.Copyd1.Error.NotFound"),
        "{out}"
    );
    assert_eq!(names_in(env.work.path()), ["big.iso"], "{out}");

    // Relative, with `..` in it (copyctl resolves those itself).
    let mut relative = env.path("sub").into_os_string();
    fs::create_dir(&relative).unwrap();
    relative.push("/../backup/");
    let out = env.copyctl(&osargs!["copy", &source, &relative]);
    out.assert_failure();
    assert!(
        out.stderr_str()
            .contains("org.example.Copyd1.Error.NotFound"),
        "{out}"
    );
    assert_eq!(names_in(env.work.path()), ["big.iso", "sub"], "{out}");
    assert!(names_in(&env.path("sub")).is_empty());

    // An existing directory written with a slash is copied into.
    fs::create_dir(env.path("backup")).unwrap();
    env.copyctl(&osargs!["copy", &source, &destination])
        .assert_success();
    assert_eq!(names_in(&env.path("backup")), ["big.iso"]);
}

#[test]
fn raw_bytes_with_a_slash_on_a_file_or_nothing_are_refused() {
    let env = TestEnv::start();
    let source = env.path("a");
    fs::write(&source, b"data").unwrap();
    fs::write(env.path("file"), b"old").unwrap();
    let copy_to = |destination: &[u8]| {
        gdbus_call(
            env.address(),
            MANAGER_PATH,
            &format!("{MANAGER_IFACE}.Copy"),
            &[
                format!("[{}]", gvariant_ay(source.as_os_str().as_bytes())),
                gvariant_ay(destination),
                "@a{sv} {}".into(),
            ],
        )
    };
    let base = env.work.path().as_os_str().as_bytes().to_vec();
    for (name, error) in [
        ("/backup/", "NotFound"),
        ("/backup/.", "NotFound"),
        ("/file/", "InvalidArgument"),
    ] {
        let out = copy_to(&[&base[..], name.as_bytes()].concat());
        assert_eq!(
            gdbus_error_name(&out).as_deref(),
            Some(&*format!("org.example.Copyd1.Error.{error}")),
            "{name}: {out}"
        );
        assert_eq!(names_in(env.work.path()), ["a", "file"], "{name}: {out}");
        assert_eq!(fs::read(env.path("file")).unwrap(), b"old");
    }
}
