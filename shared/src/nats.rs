//! Connecting to NATS the same way from both services.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::Notify;

use crate::secret::redact_url;

/// Connects to `url` with a client name, logging connection events; every
/// (re)connect notifies `on_connect` (messages published while disconnected
/// were lost to core NATS: the edge reconciles then).
///
/// The client reconnects by itself for ever after the first connection; a
/// failure to connect the first time is an error, so a misconfigured URL is
/// reported at start-up rather than hidden behind readiness.
///
/// # Errors
/// The server cannot be reached.
pub async fn connect(
    url: &str,
    name: &str,
    on_connect: Option<Arc<Notify>>,
) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .event_callback(move |event| {
            let on_connect = on_connect.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connected.");
                        if let Some(on_connect) = on_connect {
                            on_connect.notify_one();
                        }
                    }
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected."),
                    other => tracing::debug!(event = %other, "NATS event."),
                }
            }
        })
        .connect(url)
        .await
        // The URL may hold a user and password or a token: never print those.
        .with_context(|| format!("connecting to NATS at {}", redact_url(url)))
}
