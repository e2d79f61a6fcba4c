//! Health, readiness and metrics.

use async_nats::connection::State;
use axum::{
    extract::State as AxumState,
    http::{StatusCode, header},
    response::IntoResponse,
};
use herald_shared::{
    error_code::ErrorCode,
    stream::{DOMAIN_STREAM, NOTIFY_STREAM},
};

use crate::{error::ApiError, metrics, state::AppState};

/// The process is alive.
pub(crate) async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// NATS is connected and the notification stream answers, and so does the
/// domain stream when NATS ingest is on.
pub(crate) async fn readyz(AxumState(state): AxumState<AppState>) -> Result<StatusCode, ApiError> {
    if state.nats.connection_state() != State::Connected {
        return Err(ApiError::new(
            ErrorCode::NatsUnavailable,
            "not connected to NATS",
        ));
    }
    let mut streams = vec![NOTIFY_STREAM];
    if state.config.ingest.is_some() {
        streams.push(DOMAIN_STREAM);
    }
    for stream in streams {
        state.jetstream.get_stream(stream).await.map_err(|err| {
            ApiError::new(
                ErrorCode::NatsUnavailable,
                format!("stream {stream} unavailable: {err}"),
            )
        })?;
    }
    Ok(StatusCode::OK)
}

/// `GET /metrics`: this publisher's metrics in the Prometheus text format.
pub(crate) async fn metrics(AxumState(state): AxumState<AppState>) -> impl IntoResponse {
    let connected = state.nats.connection_state() == State::Connected;
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.render(connected),
    )
}
