//! Herald's wire contract and the helpers both services share.
//!
//! Everything that crosses a process boundary (HTTP bodies, NATS payloads and
//! subjects, WebSocket frames) is defined here, and only here. This crate opens
//! no sockets of its own and knows nothing of axum.

pub mod api;
pub mod channel;
pub mod config;
pub mod direct_get;
pub mod envelope;
pub mod error_code;
pub mod events;
pub mod frames;
pub mod ids;
pub mod jwks;
pub mod jwt;
pub mod nats;
pub mod net;
pub mod presence;
mod registry;
pub mod rpc;
pub mod schema;
pub mod secret;
pub mod session_control;
pub mod shutdown;
pub mod stream;
pub mod subject;
pub mod telemetry;
pub mod text;
pub mod timestamp;
pub mod token_cache;
pub mod trace_context;
