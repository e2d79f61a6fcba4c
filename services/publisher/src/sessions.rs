//! The session API: `POST /v1/users/{user}/disconnect` and
//! `POST /v1/users/{user}/unsubscribe`, for service tokens with the
//! `sessions:manage` scope.
//!
//! Edges learn of a call on the user's session control subject (one
//! subscription per edge, not per user). A revocation is stored first, in
//! the revocations bucket, for as long as a token issued before it could
//! still be unexpired: an edge that was down, or starts later, refuses the
//! revoked tokens too, and one that missed the core message still closes
//! the user's older connections when the bucket entry reaches it.

use std::time::Duration;

use async_nats::{
    connection::State as NatsState,
    jetstream::{self, kv},
};
use axum::{
    body::{Body, to_bytes},
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
};
use herald_shared::{
    error_code::ErrorCode,
    ids::UserId,
    jwt::SESSIONS_SCOPE,
    session_control::{
        Control, DisconnectRequest, REVOCATIONS_BUCKET, Revocation, UnsubscribeRequest,
    },
    subject::{revocation_key, session_control_subject},
};
use serde::de::DeserializeOwned;

use crate::{
    error::ApiError,
    http_ingest::{authorize, require_json},
    state::AppState,
};

/// The largest request body of the session API.
const MAX_BODY_BYTES: usize = 4 * 1024;
/// Clocks disagree: a revocation instant may lie this far in the future, and
/// an entry is kept this much longer than the longest token lifetime.
const CLOCK_SKEW_SECS: u64 = 60;

/// Creates or updates the revocations bucket: each entry lives as long as
/// the longest token lifetime, plus room for clock skew both ways.
/// `replicas` as for every other stream (`--stream-replicas`): an R1 bucket on
/// a cluster would stop publishers from starting, and edges from watching
/// revocations, whenever its one node is down.
pub(crate) async fn ensure_revocations_bucket(
    jetstream: &jetstream::Context,
    max_token_lifetime: Duration,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    let config = kv::Config {
        bucket: REVOCATIONS_BUCKET.into(),
        description: "Herald: per user, tokens issued before this instant are refused".into(),
        history: 1,
        max_age: max_token_lifetime + Duration::from_secs(2 * CLOCK_SKEW_SECS),
        max_value_size: 256,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    Ok(jetstream.create_or_update_key_value(config).await?)
}

/// Ends every connection of the user (`REVOKED`, close 4010); with
/// `revoke_tokens_issued_before`, also refuses their older tokens from now on.
pub(crate) async fn disconnect(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers, SESSIONS_SCOPE).await?;
    let user = parse_user(&user)?;
    let request: DisconnectRequest = read_body(&headers, body, true).await?;
    let now = now();
    let mut revoked = None;
    if let Some(before) = request.revoke_tokens_issued_before {
        if before > now + CLOCK_SKEW_SECS {
            return Err(ApiError::new(
                ErrorCode::ValidationFailed,
                "`revoke_tokens_issued_before` lies in the future",
            ));
        }
        check_connected(&state)?;
        let revocation = Revocation {
            revoked_before: before,
            expires: before + state.config.max_token_lifetime.as_secs() + CLOCK_SKEW_SECS,
        };
        store_revocation(&state, &user, revocation).await?;
        tracing::info!(%user, before, "Revoked the user's earlier tokens.");
        revoked = Some(revocation);
    }
    let control = Control::Disconnect {
        revocation: revoked,
    };
    send_control(&state, &user, &control).await?;
    tracing::info!(%user, "Disconnected the user.");
    Ok(StatusCode::ACCEPTED)
}

/// Takes a namespace from every connection of the user; they live on.
pub(crate) async fn unsubscribe(
    State(state): State<AppState>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers, SESSIONS_SCOPE).await?;
    let user = parse_user(&user)?;
    let request: UnsubscribeRequest = read_body(&headers, body, false).await?;
    let control = Control::Unsubscribe {
        namespace: request.namespace,
    };
    send_control(&state, &user, &control).await?;
    Ok(StatusCode::ACCEPTED)
}

fn parse_user(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw)
        .map_err(|err| ApiError::new(ErrorCode::ValidationFailed, format!("user id {err}")))
}

/// The JSON body; an empty one reads as `{}` when `empty_ok`.
async fn read_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let bytes = to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("body exceeds {MAX_BODY_BYTES} bytes"),
        )
    })?;
    let bytes: &[u8] = if bytes.is_empty() && empty_ok {
        b"{}"
    } else {
        require_json(headers)?;
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|err| {
        let code = match err.classify() {
            serde_json::error::Category::Data => ErrorCode::ValidationFailed,
            _ => ErrorCode::MalformedJson,
        };
        ApiError::new(code, err.to_string())
    })
}

fn check_connected(state: &AppState) -> Result<(), ApiError> {
    if state.nats.connection_state() == NatsState::Connected {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::NatsUnavailable,
            "not connected to NATS",
        ))
    }
}

/// Stores the revocation unless a later one is stored already (an earlier
/// instant never lifts a revocation), compare-and-set against a concurrent call.
async fn store_revocation(
    state: &AppState,
    user: &UserId,
    revocation: Revocation,
) -> Result<(), ApiError> {
    let unavailable = |err: &dyn std::fmt::Display| {
        tracing::warn!(error = %err, "Storing a revocation failed.");
        ApiError::new(
            ErrorCode::NatsUnavailable,
            "the revocation could not be stored; retry",
        )
    };
    let key = revocation_key(user);
    let value = serde_json::to_vec(&revocation).expect("a revocation serializes");
    for _ in 0..5 {
        let stored = state
            .revocations
            .entry(key.as_str())
            .await
            .map_err(|err| unavailable(&err))?;
        let written = match stored {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let kept = serde_json::from_slice::<Revocation>(&entry.value).ok();
                if kept.is_some_and(|kept| kept.revoked_before >= revocation.revoked_before) {
                    return Ok(());
                }
                state
                    .revocations
                    .update(key.as_str(), value.clone().into(), entry.revision)
                    .await
                    .map(drop)
                    .map_err(|err| err.to_string())
            }
            Some(entry) => state
                .revocations
                .update(key.as_str(), value.clone().into(), entry.revision)
                .await
                .map(drop)
                .map_err(|err| err.to_string()),
            None => state
                .revocations
                .create(key.as_str(), value.clone().into())
                .await
                .map(drop)
                .map_err(|err| err.to_string()),
        };
        match written {
            Ok(()) => return Ok(()),
            // Someone else wrote it meanwhile: read again.
            Err(err) => tracing::debug!(error = %err, "Revocation write raced; retrying."),
        }
    }
    Err(unavailable(&"too many concurrent writes"))
}

/// Tells every edge, and waits until NATS has the message.
async fn send_control(state: &AppState, user: &UserId, control: &Control) -> Result<(), ApiError> {
    check_connected(state)?;
    let unavailable = |err: &dyn std::fmt::Display| {
        tracing::warn!(error = %err, "Sending a session control message failed.");
        ApiError::new(
            ErrorCode::NatsUnavailable,
            "the edges could not be told; retry",
        )
    };
    let payload = serde_json::to_vec(control).expect("a control message serializes");
    state
        .nats
        .publish(session_control_subject(user).to_string(), payload.into())
        .await
        .map_err(|err| unavailable(&err))?;
    state.nats.flush().await.map_err(|err| unavailable(&err))
}

fn now() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}
