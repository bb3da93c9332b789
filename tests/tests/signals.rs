//! Every job sends Completed, however soon it ends: a client that
//! subscribes before its call and then waits for the signal alone (as a
//! file manager may) must never wait forever.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use copyd_tests::TestEnv;

use futures_util::future::join_all;
use futures_util::StreamExt;
use zbus::{MatchRule, MessageStream, OwnedObjectPath};

mod raw_client;

/// Jobs with nothing to do (every target there, on-conflict skip) are over
/// at once, often before copyd's task that turns a job's events into
/// signals first runs. (That task once took such a job for one recovered as
/// finished, and sent nothing: about 1 job in 20 had no Completed.)
#[test]
fn every_quick_job_sends_completed() {
    const JOBS: usize = 200;
    const BATCH: usize = 20;
    let env = TestEnv::start();
    let source = env.path("one-byte");
    fs::write(&source, b"x").unwrap();
    let targets: Vec<_> = (0..JOBS).map(|i| env.path(format!("copy-{i}"))).collect();
    for target in &targets {
        fs::write(target, b"already there").unwrap();
    }
    let missing = raw_client::on_bus(env.address(), |connection| async move {
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.example.Copyd1.Job")
            .member("Completed")
            .path_namespace("/org/example/Copyd1/jobs")
            .build()
            .unwrap();
        let mut completed = MessageStream::for_match_rule(rule, &connection, None)
            .await
            .unwrap();
        let mut missing = Vec::new();
        // In batches of calls in flight together: a busy copyd runs
        // its new tasks later, which is when the old fault showed.
        for batch in targets.chunks(BATCH) {
            let calls = batch.iter().map(|target| {
                let options: HashMap<&str, zbus::Variant> =
                    HashMap::from([("on-conflict", "skip".into())]);
                let body = (
                    vec![source.as_os_str().as_bytes()],
                    target.as_os_str().as_bytes(),
                    options,
                );
                let connection = &connection;
                async move {
                    let reply = connection
                        .call_method(
                            Some("org.example.Copyd1"),
                            "/org/example/Copyd1",
                            Some("org.example.Copyd1.Manager"),
                            "Copy",
                            &body,
                        )
                        .await
                        .unwrap();
                    let job: OwnedObjectPath = reply.body().deserialize().unwrap();
                    job.to_string()
                }
            });
            let mut waiting: HashSet<String> = join_all(calls).await.into_iter().collect();
            // Generous: a missing signal never comes at all.
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(Ok(message)) = completed.next().await {
                    if let Some(path) = message.header().path() {
                        waiting.remove(path.as_str());
                    }
                    if waiting.is_empty() {
                        break;
                    }
                }
            })
            .await;
            missing.extend(waiting);
        }
        missing
    });
    assert!(missing.is_empty(), "no Completed from {missing:?}");
    for target in (0..JOBS).map(|i| env.path(format!("copy-{i}"))) {
        assert_eq!(fs::read(&target).unwrap(), b"already there");
    }
}
