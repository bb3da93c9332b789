//! The authorization table of the daemon (copyd_service::auth::actions)
//! covers every method copyd really serves: compared with the live
//! introspection of the Manager and of a Job, both ways.

use std::collections::BTreeSet;
use std::fs;

use copyd_service::auth::actions::{self, METHODS};
use copyd_tests::contract;
use copyd_tests::{TestEnv, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH};

#[test]
fn every_method_has_an_authorization_rule() {
    assert_eq!(actions::MANAGER_INTERFACE, MANAGER_IFACE);
    assert_eq!(actions::JOB_INTERFACE, JOB_IFACE);
    let env = TestEnv::start();
    let b = env.busctl();
    let src = env.path("src.txt");
    fs::write(&src, b"hello").unwrap();
    let job = b.copy(
        &[&src],
        &env.path("dst.txt"),
        &["start-paused", "b", "true"],
    );

    let mut live = BTreeSet::new();
    for (path, iface) in [(MANAGER_PATH, MANAGER_IFACE), (job.as_str(), JOB_IFACE)] {
        let parsed = contract::parse(&b.introspect(path), path);
        let interface = parsed
            .get(iface)
            .unwrap_or_else(|| panic!("{path} does not serve {iface}"));
        for method in interface.methods.keys() {
            live.insert((iface.to_string(), method.clone()));
        }
    }
    b.cancel(&job).assert_success();

    let table: BTreeSet<(String, String)> = METHODS
        .iter()
        .map(|(iface, method, _)| (iface.to_string(), method.to_string()))
        .collect();
    let unmapped: Vec<_> = live.difference(&table).collect();
    let stale: Vec<_> = table.difference(&live).collect();
    let shown: Vec<String> = METHODS
        .iter()
        .map(|(i, m, rule)| format!("{i}.{m}: {}", rule.describe()))
        .collect();
    assert!(
        unmapped.is_empty() && stale.is_empty(),
        "methods without a rule in copyd-service/src/auth/actions.rs: {unmapped:?}\n\
         rules for methods copyd does not serve: {stale:?}\n\
         the table:\n  {}",
        shown.join("\n  ")
    );
}
