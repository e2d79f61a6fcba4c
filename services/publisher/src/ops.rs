//! Health, readiness and metrics.

use async_nats::connection::State;
use axum::{
    extract::State as AxumState,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
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
/// domain stream when NATS ingest is on; with `--jwks-url`, the identity
/// provider's keys have been fetched once (before that every token is refused).
pub(crate) async fn readyz(AxumState(state): AxumState<AppState>) -> Response {
    if !state.config.keys.ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the identity provider's keys (--jwks-url) have not been fetched yet",
        )
            .into_response();
    }
    streams_ready(&state).await.into_response()
}

async fn streams_ready(state: &AppState) -> Result<StatusCode, ApiError> {
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
