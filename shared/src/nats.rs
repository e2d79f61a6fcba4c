//! Connecting to NATS the same way from both services.

use anyhow::Context as _;

/// Connects to `url` with a client name, logging connection events.
///
/// The client reconnects by itself for ever after the first connection; a
/// failure to connect the first time is an error, so a misconfigured URL is
/// reported at start-up rather than hidden behind readiness.
///
/// # Errors
/// The server cannot be reached.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected."),
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected."),
                other => tracing::debug!(event = %other, "NATS event."),
            }
        })
        .connect(url)
        .await
        .with_context(|| format!("connecting to NATS at {url}"))
}
