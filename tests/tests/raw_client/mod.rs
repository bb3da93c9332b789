//! A raw D-Bus client for the tests that send what no command-line tool
//! can (a message of 10^5 paths, calls in flight together): a
//! single-threaded runtime and one connection to the test bus.

use std::future::Future;

/// Runs `body` on a connection to the bus at `address` and returns what
/// it returns.
pub fn on_bus<T, F>(address: &str, body: impl FnOnce(zbus::Connection) -> F) -> T
where
    F: Future<Output = T>,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let connection = zbus::connection::Builder::address(address)
                .build()
                .await
                .unwrap();
            body(connection).await
        })
}
