//! Herald's integration tests: one binary, one module per behavior, a real
//! nats-server per test. Run them with `cargo xtask test`.

// Fault tests print their counts (delivered, lost, duplicated) even on success.
#![allow(clippy::print_stderr)]

mod admission;
mod assets;
mod auth;
mod calendar_service;
mod cluster;
mod cluster_faults;
mod config;
mod deadlines;
mod delivery;
mod deploy;
mod faults;
mod frames;
mod ingest_nats;
mod jwks;
mod live;
mod metrics;
mod nats_auth;
mod presence;
mod production;
mod publish_batch;
mod publish_http;
mod publisher_limits;
mod replay_bounds;
mod resume;
mod rpc;
mod schemas;
mod service_tokens;
mod sessions;
mod slow_clients;
mod sse;
mod trace_propagation;
