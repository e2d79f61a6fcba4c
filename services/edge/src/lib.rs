//! herald-edge: holds browser WebSockets, authenticated by JWT at the
//! handshake, and delivers the notifications of their channels.
//!
//! The node subscribes to NATS only for channels with at least one local
//! socket, one subscription per channel however many sockets share it
//! (`hub`), and fans each message out as one prebuilt frame.

mod admission;
mod assets;
mod attach;
pub mod config;
mod control;
mod deadline;
mod dev;
mod disconnect;
mod frame;
mod handshake;
mod hub;
pub mod live;
mod metrics;
mod ops;
mod origin;
mod outbox;
mod presence;
mod rate_limit;
mod replay;
mod rpc;
mod session;
mod sse;
mod state;
mod stream_reader;
mod user_slots;

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Router, routing::get};
use herald_shared::stream::{EPOCH_METADATA_KEY, NOTIFY_STREAM};
use tokio::net::TcpListener;

pub use crate::config::{Args, Config};
use crate::state::AppState;

/// Connects to NATS, waits for the notification stream, and serves
/// WebSockets on `listener` until `shutdown` completes; then tells every
/// socket to reconnect elsewhere and waits for them, at most the drain timeout.
///
/// # Errors
/// NATS cannot be reached at start-up.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client_name = format!("herald-edge {}", config.node_id);
    let nats =
        herald_shared::nats::connect(&config.nats_url, &config.nats_auth, &client_name, None)
            .await?;
    // Every (re)connect of the live path asks the hub for a reconcile pass:
    // what was republished while it was down is lost to core NATS.
    let reconcile = Arc::new(tokio::sync::Notify::new());
    let live = live::LiveClient::connect(
        &config.nats_url,
        &config.nats_auth,
        &format!("{client_name} live"),
        Some(reconcile.clone()),
    )
    .await?;
    // History (replays, gap repairs, reconcile passes) is read on a
    // connection of its own: a burst of it then never queues ahead of live
    // messages, nor gets the live connection cut off as a slow consumer.
    let history = herald_shared::nats::connect(
        &config.nats_url,
        &config.nats_auth,
        &format!("{client_name} history"),
        None,
    )
    .await?;
    let jetstream = async_nats::jetstream::new(nats.clone());
    let stream = wait_for_stream(&jetstream).await?;
    let epoch = stream
        .cached_info()
        .config
        .metadata
        .get(EPOCH_METADATA_KEY)
        .cloned()
        .unwrap_or_default();
    tracing::info!(node = %config.node_id, %epoch, "Notification stream found.");

    let drain_timeout = config.drain_timeout;
    let reconcile_interval = config.reconcile_interval;
    let state = AppState::new(
        config,
        nats.clone(),
        live,
        history.clone(),
        epoch,
        reconcile,
    );
    let reconciling = tokio::spawn(state.hub.clone().reconcile_forever(reconcile_interval));
    let presence = tokio::spawn(state.presence.clone().run());
    // Before serving: an edge started after a revocation refuses its tokens too.
    let controlling = control::start(&nats, state.registry.clone()).await?;
    // With `--jwks-url`: fetch the provider's keys now and whenever they go stale.
    let _refreshing_keys = state.config.keys.start(state.metrics.clone());
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "Edge listening.");

    let send_buffer = state.config.socket_send_buffer_bytes;
    let listener = axum::serve::ListenerExt::tap_io(listener, move |tcp| {
        // Small frames must not wait for Nagle and the peer's delayed ACK.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "Setting TCP_NODELAY failed.");
        }
        // Cap what a slow reader can park in the kernel (it autotunes to 4 MiB).
        if let Some(bytes) = send_buffer {
            let _ = socket_send_buffer(tcp, bytes);
        }
    });
    // Drain while HTTP is still served, so a load balancer sees `/readyz`
    // answer 503 and new upgrades refused; stop listening only after that.
    // axum's graceful shutdown does not cover upgraded sockets: we track our own.
    let drain = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.draining.cancel();
            tracing::info!(
                n_sessions = state.sessions.len(),
                "Draining WebSocket sessions."
            );
            state.sessions.close();
            if tokio::time::timeout(drain_timeout, state.sessions.wait())
                .await
                .is_err()
            {
                let n_sessions = state.sessions.len();
                tracing::warn!(
                    n_sessions,
                    ?drain_timeout,
                    "Drain timed out; closing anyway."
                );
            }
        }
    };
    herald_http::serve(listener, router(state.clone()), state.config.http, drain).await;
    reconciling.abort();
    controlling.abort();
    // The sessions have ended: their users leave at once rather than at the TTL.
    presence.abort();
    state.presence.flush().await;
    let _ = nats.drain().await;
    let _ = history.drain().await;
    tracing::info!("Edge stopped.");
    Ok(())
}

/// The edge's routes; the demo and `/dev/*` only in dev mode.
fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/v1/ws", get(handshake::websocket))
        .route("/v1/sse", get(sse::sse))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(assets::client_routes());
    if state.config.dev_mode {
        tracing::warn!(
            "Development mode: serving /demo and /dev/token, which mints tokens for anyone who asks."
        );
        router = router
            .merge(assets::demo_routes())
            .merge(dev::routes(state.config.dev_secret.as_ref()));
    }
    router.with_state(state)
}

/// The publisher creates the stream; an edge started first waits for it.
async fn wait_for_stream(
    jetstream: &async_nats::jetstream::Context,
) -> anyhow::Result<async_nats::jetstream::stream::Stream> {
    let mut attempt = 0u32;
    loop {
        match jetstream.get_stream(NOTIFY_STREAM).await {
            Ok(stream) => return Ok(stream),
            Err(err) => {
                if attempt.is_multiple_of(20) {
                    tracing::warn!(error = %err, stream = NOTIFY_STREAM, "Waiting for the notification stream.");
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

fn socket_send_buffer(tcp: &tokio::net::TcpStream, bytes: u32) -> std::io::Result<()> {
    socket2::SockRef::from(tcp).set_send_buffer_size(bytes as usize)
}
