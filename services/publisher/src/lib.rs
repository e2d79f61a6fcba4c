//! herald-publisher: validates domain events and stores one notification per
//! recipient channel in the JetStream notification stream.
//!
//! `run` serves `POST /v1/events` until its shutdown future completes, then
//! finishes in-flight requests and drains its NATS connection.

pub mod config;
mod error;
mod http_ingest;
mod ops;
mod publish;
mod state;
pub mod streams;

use std::future::Future;

use anyhow::Context as _;
use axum::{
    Router,
    routing::{get, post},
};
use tokio::net::TcpListener;

pub use crate::config::{Args, Config};
use crate::state::AppState;

/// Connects to NATS, ensures the streams, and serves HTTP on `listener`
/// until `shutdown` completes.
///
/// # Errors
/// NATS cannot be reached at start-up, or the streams cannot be created.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let nats = herald_shared::nats::connect(&config.nats_url, "herald-publisher").await?;
    let jetstream = async_nats::jetstream::new(nats.clone());
    let epoch = streams::ensure_notify_stream(&jetstream, &config.stream)
        .await
        .context("ensuring the notification stream")?;
    tracing::info!(%epoch, "Notification stream ready.");

    let state = AppState::new(config, nats.clone(), jetstream);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "Publisher listening.");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;

    // Every accepted request has had its acks by now; flush what is buffered.
    if let Err(err) = nats.drain().await {
        tracing::warn!(error = %err, "Draining the NATS connection failed.");
    }
    tracing::info!("Publisher stopped.");
    Ok(())
}

/// The publisher's routes.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/events", post(http_ingest::post_event))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .with_state(state)
}
