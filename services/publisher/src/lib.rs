//! herald-publisher: validates domain events and stores one notification per
//! recipient channel in the JetStream notification stream.
//!
//! `run` serves `POST /v1/events` (and `/v1/events/batch`) and consumes domain events from NATS
//! (`domain.>`) until its shutdown future completes; then it stops taking
//! work, finishes in-flight requests and the domain message in hand, and
//! drains its NATS connection.

mod batch_ingest;
pub mod config;
mod cors;
mod error;
mod http_ingest;
mod metrics;
mod nats_ingest;
mod ops;
mod presence;
mod publish;
mod quota;
mod sequencer;
mod sessions;
mod state;
pub mod streams;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    routing::{get, post},
};
use herald_shared::stream::{DOMAIN_CONSUMER, DOMAIN_STREAM};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::{Args, Config};
use crate::{metrics::Metrics, nats_ingest::Ingest, state::AppState};

/// Connects to NATS, ensures the streams, serves HTTP on `listener` and
/// consumes domain events (unless disabled) until `shutdown` completes.
///
/// # Errors
/// NATS cannot be reached at start-up, or the streams cannot be created.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let nats = herald_shared::nats::connect(
        &config.nats_url,
        &config.nats_auth,
        "herald-publisher",
        None,
    )
    .await?;
    let jetstream = async_nats::jetstream::new(nats.clone());
    // Before the notification stream: edges wait for that, then watch this.
    let revocations = at_start_up("the revocations bucket", || {
        sessions::ensure_revocations_bucket(
            &jetstream,
            config.max_token_lifetime,
            config.stream.replicas,
        )
    })
    .await?;
    let epoch = at_start_up("the notification stream", || {
        streams::ensure_notify_stream(&jetstream, &config.stream)
    })
    .await?;
    tracing::info!(%epoch, "Notification stream ready.");
    at_start_up("the presence stream", || {
        streams::ensure_presence_stream(&jetstream, config.stream.replicas)
    })
    .await?;

    // One registry for HTTP and NATS ingest alike.
    let metrics = Arc::new(Metrics::new());
    // Fires on `shutdown`, or when the HTTP server fails: both stop together.
    let stop = CancellationToken::new();
    let ingest = match &config.ingest {
        Some(limits) => {
            let consumer = at_start_up("the domain and dead-letter streams", || {
                streams::ensure_domain_streams(&jetstream, limits)
            })
            .await?;
            tracing::info!(
                stream = DOMAIN_STREAM,
                consumer = DOMAIN_CONSUMER,
                "Consuming domain events."
            );
            let ingest = Ingest {
                jetstream: jetstream.clone(),
                limits: limits.clone(),
                publish_window: config.publish_window,
                max_event_stored_bytes: config.limits.max_event_stored_bytes,
                metrics: metrics.clone(),
            };
            Some(ingest.spawn(consumer, stop.clone()))
        }
        None => None,
    };

    // With `--jwks-url`: fetch the provider's keys now and whenever they go stale.
    let _refreshing_keys = config.keys.start(metrics.clone());
    let state = AppState::new(config, nats.clone(), jetstream, metrics, revocations);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "Publisher listening.");
    let http_limits = state.config.http;
    let http = async {
        herald_http::serve(listener, router(state), http_limits, stop.cancelled()).await;
        stop.cancel();
    };
    let signal = async {
        tokio::select! {
            () = shutdown => stop.cancel(),
            () = stop.cancelled() => {}
        }
    };
    let ingest = async {
        let Some(task) = ingest else { return Ok(()) };
        let ended = task.await;
        // It ends on `stop`, or if it panicked: then stop serving too, rather
        // than live on with nobody consuming domain events.
        stop.cancel();
        ended
    };
    let ((), (), ingested) = tokio::join!(http, signal, ingest);

    // Every accepted request and the last domain message have had their acks
    // by now; flush what is buffered.
    if let Err(err) = nats.drain().await {
        tracing::warn!(error = %err, "Draining the NATS connection failed.");
    }
    ingested.context("consuming domain events")?;
    tracing::info!("Publisher stopped.");
    Ok(())
}

/// The publisher's routes; in dev mode they answer CORS too.
fn router(state: AppState) -> Router {
    let dev_mode = state.config.dev_mode;
    let router = Router::new()
        .route("/v1/events", post(http_ingest::post_event))
        .route("/v1/events/batch", post(batch_ingest::post_batch))
        .route("/v1/users/{user}/disconnect", post(sessions::disconnect))
        .route("/v1/users/{user}/unsubscribe", post(sessions::unsubscribe))
        .route("/v1/presence/{namespace}", get(presence::get_presence))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .with_state(state);
    if dev_mode {
        tracing::warn!("Development mode: answering CORS requests from any origin.");
        router.layer(axum::middleware::from_fn(cors::allow_any_origin))
    } else {
        router
    }
}

/// How long start-up keeps trying to set up a stream: long enough to ride
/// out a JetStream cluster electing its meta leader (a node restarting, a
/// cluster just started), short enough that a setup that cannot work (three
/// replicas on one server) fails the start with its error.
const START_UP_PATIENCE: Duration = Duration::from_secs(60);

/// Runs `ensure` until it succeeds, retrying failures with a delay that
/// doubles from 250 ms to 5 s, for at most [`START_UP_PATIENCE`].
async fn at_start_up<T, E, F, Fut>(what: &'static str, mut ensure: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    let deadline = tokio::time::Instant::now() + START_UP_PATIENCE;
    let mut delay = Duration::from_millis(250);
    loop {
        match ensure().await.map_err(Into::into) {
            Ok(value) => return Ok(value),
            Err(err) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %err, what, retry_in_ms = delay.as_millis(), "Setting up JetStream failed; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err.context(format!("ensuring {what}"))),
        }
    }
}
