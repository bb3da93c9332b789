//! copyd serving one client over a socket pair (`copyd --peer-stdin`), the
//! way copyctl starts a private copyd, driven here with a raw zbus
//! connection: Copy, watch the job's signals, check the result on disk.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use zbus::{OwnedObjectPath, Variant};

const MANAGER: &str = "org.example.Copyd1.Manager";

async fn connect() -> (zbus::Connection, std::process::Child) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_copyd"))
        .arg("--peer-stdin")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .spawn()
        .unwrap();
    let connection = zbus::connection::Builder::unix_stream(ours)
        .p2p()
        .build()
        .await
        .unwrap();
    (connection, child)
}

async fn call_copy(
    connection: &zbus::Connection,
    sources: &[&[u8]],
    destination: &[u8],
    options: HashMap<&str, Variant<'_>>,
) -> zbus::Result<OwnedObjectPath> {
    let reply = connection
        .call_method(
            None::<&str>,
            "/org/example/Copyd1",
            Some(MANAGER),
            "Copy",
            &(sources, destination, options),
        )
        .await?;
    reply.body().deserialize()
}

async fn property(connection: &zbus::Connection, path: &str, name: &str) -> Variant<'static> {
    let reply = connection
        .call_method(
            None::<&str>,
            path,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &("org.example.Copyd1.Job", name),
        )
        .await
        .unwrap();
    let value: zbus::OwnedVariant = reply.body().deserialize().unwrap();
    Variant::from(value)
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_over_a_private_socket_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("sub/data"), vec![7u8; 3 << 20]).unwrap();
    std::os::unix::fs::symlink("sub/data", source.join("link")).unwrap();
    let destination = dir.path().join("dst");
    let (connection, mut child) = connect().await;

    let bytes = |p: &std::path::Path| p.as_os_str().as_encoded_bytes().to_vec();
    let (src, dst) = (bytes(&source), bytes(&destination));

    // Bad input: typed errors, nothing created.
    let missing = bytes(&dir.path().join("missing"));
    let err = call_copy(&connection, &[&missing], &dst, HashMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, zbus::Error::MethodError(name, _, _) if name.as_str() == "org.example.Copyd1.Error.NotFound"),
        "{err:?}"
    );
    let err = call_copy(&connection, &[b"relative/path"], &dst, HashMap::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, zbus::Error::MethodError(name, _, _) if name.as_str() == "org.example.Copyd1.Error.InvalidArgument"),
        "{err:?}"
    );
    assert!(!destination.exists());

    let job = call_copy(
        &connection,
        &[&src],
        &dst,
        HashMap::from([("recursive", Variant::Bool(true))]),
    )
    .await
    .unwrap();
    let mut state = String::new();
    for _ in 0..200 {
        state = match property(&connection, job.as_str(), "State").await {
            Variant::Str(s) => s.as_str().to_owned(),
            other => panic!("State is {other:?}"),
        };
        if state == "completed" || state == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "completed");
    assert_eq!(
        std::fs::read(destination.join("sub/data")).unwrap(),
        vec![7u8; 3 << 20]
    );
    assert_eq!(
        std::fs::read_link(destination.join("link")).unwrap(),
        std::path::Path::new("sub/data")
    );
    assert_eq!(
        property(&connection, job.as_str(), "BytesDone").await,
        Variant::U64(3 << 20)
    );

    // The private copyd ends when its client goes away.
    drop(connection);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "copyd exited with {status}");
}
