//! `GET /v1/presence/{namespace}`: who is in a namespace, on every edge, for
//! a service token with the `presence:read` scope.
//!
//! The answer is the last set every edge wrote to the presence stream,
//! merged (`herald_shared::presence::read`); a replica a little behind may
//! answer it, as presence is eventually consistent.

use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
};
use herald_shared::{
    api::PresenceBody, channel::Channel, error_code::ErrorCode, ids::Namespace,
    jwt::PRESENCE_SCOPE, stream::PRESENCE_STREAM,
};

use crate::{error::ApiError, http_ingest::authorize, state::AppState};

/// The namespace's members, at most `--presence-max-members` listed.
pub(crate) async fn get_presence(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
) -> Result<Json<PresenceBody>, ApiError> {
    authorize(&state, &headers, PRESENCE_SCOPE).await?;
    let namespace = Namespace::parse(namespace)
        .map_err(|err| ApiError::new(ErrorCode::ValidationFailed, format!("namespace {err}")))?;
    let max = state.config.presence_max_members;
    let roster = herald_shared::presence::read(&state.nats, PRESENCE_STREAM, &namespace, max)
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "Reading presence failed.");
            ApiError::new(
                ErrorCode::NatsUnavailable,
                "presence could not be read; retry",
            )
        })?;
    Ok(Json(PresenceBody {
        channel: Channel::namespace(namespace),
        members: roster.members,
        truncated: roster.truncated,
    }))
}
