//! Herald's integration tests: one binary, one module per behavior, a real
//! nats-server per test. Run them with `cargo xtask test`.

mod auth;
mod delivery;
mod frames;
mod publish_http;
mod schemas;
