//! Health and readiness.

use async_nats::connection::State;
use axum::{extract::State as AxumState, http::StatusCode};
use herald_shared::{error_code::ErrorCode, stream::NOTIFY_STREAM};

use crate::{error::ApiError, state::AppState};

/// The process is alive.
pub(crate) async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// NATS is connected and the notification stream answers.
pub(crate) async fn readyz(AxumState(state): AxumState<AppState>) -> Result<StatusCode, ApiError> {
    if state.nats.connection_state() != State::Connected {
        return Err(ApiError::new(
            ErrorCode::NatsUnavailable,
            "not connected to NATS",
        ));
    }
    state
        .jetstream
        .get_stream(NOTIFY_STREAM)
        .await
        .map_err(|err| {
            ApiError::new(
                ErrorCode::NatsUnavailable,
                format!("stream unavailable: {err}"),
            )
        })?;
    Ok(StatusCode::OK)
}
