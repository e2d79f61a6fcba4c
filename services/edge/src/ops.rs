//! Health, readiness and metrics.

use async_nats::connection::State as NatsState;
use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};

use crate::{metrics, state::AppState};

/// The process is alive.
pub(crate) async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// Connected to NATS, not draining and, with `--jwks-url`, holding the
/// identity provider's keys (before that every token is refused): a load
/// balancer may send sockets here.
pub(crate) async fn readyz(State(state): State<AppState>) -> StatusCode {
    let connected =
        state.nats.connection_state() == NatsState::Connected && state.live.is_connected();
    if connected && !state.draining.is_cancelled() && state.config.keys.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /metrics`: this node's metrics in the Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let connected =
        state.nats.connection_state() == NatsState::Connected && state.live.is_connected();
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.render(connected),
    )
}
