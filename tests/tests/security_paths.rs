//! A job's paths are its owner's business: other users read them empty
//! (and a path-free summary instead of the error message), the
//! ObjectManager's listing shows them empty, and signals that carry paths
//! go to the owner's connection only. (Needs root and polkitd.)

use std::fs;
use std::os::unix::fs::PermissionsExt;

use copyd_tests::busctl::parse_busctl_object_path;
use copyd_tests::polkit::{chown, ensure_user, SecureEnv, OTHER, USER};
use copyd_tests::{JOB_IFACE, MANAGER_PATH};

fn property_as(env: &SecureEnv, user: &str, job: &str, name: &str) -> serde_json::Value {
    let out = env.busctl_as(
        user,
        &[
            "--json=short",
            "get-property",
            "org.example.Copyd1",
            job,
            JOB_IFACE,
            name,
        ],
    );
    out.assert_success();
    out.json()["data"].clone()
}

#[test]
fn other_users_do_not_see_a_jobs_paths() {
    let Some(env) = SecureEnv::start() else {
        return;
    };
    let ids = ensure_user(USER);
    let home = env.user_dir(USER, "secret-names");
    let source = home.join("salary-2026.ods");
    fs::write(&source, b"numbers").unwrap();
    chown(&source, ids);
    let target = home.join("salary-copy.ods");
    let out = env.start_as(
        USER,
        "Copy",
        &[&source],
        &target,
        &["start-paused", "b", "true"],
    );
    out.assert_success();
    let job = parse_busctl_object_path(&out.stdout_str());

    // The owner sees the paths.
    let bytes = source.as_os_str().as_encoded_bytes().to_vec();
    assert_eq!(
        property_as(&env, USER, &job, "Sources"),
        serde_json::json!([bytes])
    );
    assert_ne!(
        property_as(&env, USER, &job, "Destination"),
        serde_json::json!([])
    );
    // Another user does not.
    assert_eq!(
        property_as(&env, OTHER, &job, "Sources"),
        serde_json::json!([])
    );
    assert_eq!(
        property_as(&env, OTHER, &job, "Destination"),
        serde_json::json!([])
    );
    // Nor does the ObjectManager listing, for anyone.
    let listing = env.busctl_as(
        OTHER,
        &[
            "--json=short",
            "call",
            "org.example.Copyd1",
            MANAGER_PATH,
            "org.freedesktop.DBus.ObjectManager",
            "GetManagedObjects",
        ],
    );
    listing.assert_success();
    let text = listing.stdout_str();
    assert!(
        !text.contains("salary"),
        "a name leaked through GetManagedObjects: {text}"
    );

    // A failure's message: the owner gets it whole, others a summary.
    fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_file(&source).unwrap();
    env.call_as(USER, &job, JOB_IFACE, "Resume", "a{sv}", &["0".into()])
        .assert_success();
    let b = copyd_tests::busctl::Busctl::new(env.address());
    assert_eq!(
        b.wait_job_end(&job, std::time::Duration::from_secs(20)),
        "failed"
    );
    let theirs = property_as(&env, OTHER, &job, "ErrorMessage").to_string();
    assert!(!theirs.contains("salary") && !theirs.is_empty(), "{theirs}");
    let mine = property_as(&env, USER, &job, "ErrorMessage").to_string();
    assert!(mine.contains("salary-2026.ods"), "{mine}");
}
