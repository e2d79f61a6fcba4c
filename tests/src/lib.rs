//! Herald's integration-test harness: a real nats-server per test, the real
//! publisher and edge in-process on OS-chosen ports, and real clients.

pub mod apps;
pub mod clients;
pub mod cluster;
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
