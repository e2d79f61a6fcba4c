//! calendar-service: an example domain service behind Herald.
//!
//! Browsers call `calendar.event.*` methods over their Herald socket; the
//! edge validates each call and sends it as a NATS request to
//! `rpc.<method>` with the caller in `Herald-User`. This service answers
//! those requests in a queue group (run as many replicas as you like; each
//! request goes to one), keeps the calendars in a NATS key-value bucket, and
//! publishes each change as a `calendar.event.*` domain event on
//! `domain.<type>` through JetStream, which Herald's publisher turns into
//! notifications for every member's sockets.
//!
//! `run` serves until its shutdown future completes; then it stops taking
//! requests, answers those it holds, and drains its NATS connection.

pub mod calendar;
pub mod config;
pub mod error;
pub mod handle;
mod service;
pub mod store;

use std::future::Future;

pub use crate::config::{Args, Config};
use crate::{handle::Handler, store::Store};

/// Connects to NATS, opens the bucket, adds the seeded members, and answers
/// requests until `shutdown` completes.
///
/// # Errors
/// NATS cannot be reached, or the bucket cannot be created.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let nats = herald_shared::nats::connect(
        &config.nats_url,
        &config.nats_auth,
        "calendar-service",
        None,
    )
    .await?;
    let jetstream = async_nats::jetstream::new(nats.clone());
    let store = Store::open(jetstream, &config.bucket, config.replicas).await?;
    let handler = Handler {
        store,
        auto_join: config.auto_join,
    };
    for (calendar, members) in &config.seed_members {
        handler
            .seed(calendar, members)
            .await
            .map_err(|err| anyhow::anyhow!("seeding calendar {}: {err}", calendar.as_str()))?;
    }
    service::serve(&nats, &config, handler, shutdown).await?;
    nats.drain().await?;
    tracing::info!("Calendar service drained.");
    Ok(())
}
