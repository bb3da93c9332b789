//! The live objects match the contract, dbus/org.example.Copyd1.xml.

use std::fs;

use copyd_tests::busctl::path_bytes;
use copyd_tests::contract;
use copyd_tests::{contract_xml_path, TestEnv, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH};

#[test]
fn introspection_matches_contract() {
    let env = TestEnv::start();
    let b = env.busctl();
    let want = contract::parse(
        &fs::read_to_string(contract_xml_path()).unwrap(),
        "contract",
    );
    assert!(
        want.contains_key(MANAGER_IFACE) && want.contains_key(JOB_IFACE),
        "contract lacks an interface"
    );

    // A job to introspect: paused, so it stays put.
    let src = env.path("src.txt");
    fs::write(&src, b"hello").unwrap();
    let job = b.copy(
        &[&src],
        &env.path("dst.txt"),
        &["start-paused", "b", "true"],
    );

    let manager_xml = b.introspect(MANAGER_PATH);
    let job_xml = b.introspect(&job);
    let manager = contract::parse(&manager_xml, MANAGER_PATH);
    let jobobj = contract::parse(&job_xml, &job);

    let mut problems = Vec::new();
    for (name, iface) in &want {
        // Each contract interface lives on one kind of object.
        let (path, live) = if name == JOB_IFACE {
            (&job[..], &jobobj)
        } else {
            (MANAGER_PATH, &manager)
        };
        match live.get(name) {
            None => problems.push(format!(
                "{path}: interface {name} is missing; live has: {:?}",
                live.keys().collect::<Vec<_>>()
            )),
            Some(got) => problems.extend(contract::diff(name, iface, got)),
        }
    }
    assert!(
        manager.contains_key("org.freedesktop.DBus.ObjectManager"),
        "{MANAGER_PATH} does not list org.freedesktop.DBus.ObjectManager; live has: {:?}",
        manager.keys().collect::<Vec<_>>()
    );
    assert!(
        manager.contains_key("org.freedesktop.DBus.Properties"),
        "{MANAGER_PATH} does not list org.freedesktop.DBus.Properties"
    );

    // Clean up the job before reporting.
    b.cancel(&job).assert_success();
    assert!(
        problems.is_empty(),
        "live introspection differs from {}:\n  {}\n\nlive {MANAGER_PATH}:\n{manager_xml}\n\nlive {job}:\n{job_xml}",
        contract_xml_path().display(),
        problems.join("\n  ")
    );
    assert!(
        !env.path("dst.txt").exists(),
        "cancelled paused job left its destination"
    );
}

/// The manager announces its jobs through ObjectManager, and the job path
/// ends with its Id; GetJob finds it; ListJobs lists it.
#[test]
fn object_manager_lists_jobs() {
    let env = TestEnv::start();
    let b = env.busctl();
    let src = env.path("src.txt");
    fs::write(&src, b"hello").unwrap();
    let job = b.copy(
        &[&src],
        &env.path("dst.txt"),
        &["start-paused", "b", "true"],
    );

    let managed = b.call_json(
        MANAGER_PATH,
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
        "",
        &[],
    );
    let objs = &managed["data"][0];
    assert!(
        objs.get(&job).and_then(|o| o.get(JOB_IFACE)).is_some(),
        "GetManagedObjects lacks {job} with {JOB_IFACE}: {managed}"
    );

    let id = b.job_prop(&job, "Id").as_str().unwrap().to_string();
    assert!(
        job.ends_with(&format!("/{id}")),
        "job path {job} does not end with its Id {id}"
    );
    let got = b.call_json(
        MANAGER_PATH,
        MANAGER_IFACE,
        "GetJob",
        "s",
        std::slice::from_ref(&id),
    );
    assert_eq!(got["data"][0].as_str(), Some(&job[..]), "GetJob({id})");
    let list = b.call_json(MANAGER_PATH, MANAGER_IFACE, "ListJobs", "", &[]);
    assert!(
        list["data"][0]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str() == Some(&job[..])),
        "ListJobs lacks {job}: {list}"
    );
    let srcs = b.job_prop(&job, "Sources");
    assert_eq!(srcs, serde_json::json!([path_bytes(&src)]), "Sources");
    assert_eq!(b.job_prop(&job, "Operation").as_str(), Some("copy"));
    assert_eq!(
        b.job_prop(&job, "StartedByUID").as_u64(),
        Some(rustix::process::getuid().as_raw() as u64)
    );

    // A job that does not exist.
    let out = b.call(
        MANAGER_PATH,
        MANAGER_IFACE,
        "GetJob",
        "s",
        &["no-such-job".to_string()],
    );
    out.assert_failure();
    b.cancel(&job).assert_success();
}
