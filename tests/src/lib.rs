//! Herald's integration-test harness: a real nats-server per test, the real
//! publisher and edge in-process on OS-chosen ports, and real clients.

pub mod apps;
pub mod clients;
pub mod cluster;
pub mod edge_process;
pub mod jwks;
pub mod load;
pub mod metrics;
pub mod nats;
pub mod permissions;
pub mod proxy;
pub mod resume;
pub mod sse;
pub mod store;

/// Every wait in the tests is bounded by this.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A reqwest client for tests with a timeout per request. reqwest is built
/// with rustls and no crypto provider of its own (the workspace picks ring),
/// so one must be installed before any client is built: a test that builds
/// one before a `NatsServer` has started would panic, or pass only when
/// another test happened to install it first.
pub fn http_client(timeout: std::time::Duration) -> reqwest::Client {
    herald_shared::jwks::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .expect("a reqwest client")
}
