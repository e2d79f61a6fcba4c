//! `POST /v1/events`: authenticate, limit, parse, validate, bound the stored
//! bytes, take from the service's quota, store, answer 202.

use std::time::Instant;

use async_nats::connection::State as NatsState;
use axum::{
    Json,
    body::{Body, Bytes, to_bytes},
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use herald_shared::{
    api::PublishAccepted,
    envelope::{MAX_ENVELOPE_BYTES, parse_event},
    error_code::ErrorCode,
    jwt::{PUBLISH_SCOPE, ServiceClaims},
    trace_context,
};
use tracing::Instrument;

use crate::{
    error::ApiError,
    metrics::Source,
    publish::{check_stored_bytes, publish},
    state::AppState,
};

/// The request's span continues the caller's trace (its `traceparent`), and
/// every notification stored for it carries the span on, to the delivery.
pub(crate) async fn post_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PublishAccepted>), ApiError> {
    let span = tracing::info_span!(
        "post_event",
        "event.id" = tracing::field::Empty,
        "event.type" = tracing::field::Empty,
    );
    trace_context::set_parent_http(&span, &headers);
    accept_event(state, headers, body).instrument(span).await
}

async fn accept_event(
    state: AppState,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<PublishAccepted>), ApiError> {
    // Counted once, however this ends; `rejected` until it is valid.
    let mut outcome = state.metrics.event(Source::Http);
    let (service, bytes) = read_publish(&state, &headers, body, MAX_ENVELOPE_BYTES).await?;

    let parsing = Instant::now();
    let event = parse_event(&bytes).map_err(|refused| {
        outcome.claimed_type(refused.claimed_type);
        refused.body
    })?;
    outcome.of_type(event.event_type);
    let stored_bytes = check_stored_bytes(&event, state.config.limits.max_event_stored_bytes)?;
    take_quota(&state, &service, stored_bytes, "Retry-After")?;
    outcome.storing(event.event_type);
    let span = tracing::Span::current();
    span.record("event.id", event.id.as_str());
    span.record("event.type", event.event_type.as_str());

    if state.nats.connection_state() != NatsState::Connected {
        return Err(ApiError::new(
            ErrorCode::NatsUnavailable,
            "not connected to NATS",
        ));
    }
    let accepted = publish(&state.jetstream, &event, state.config.publish_window)
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, "Publishing failed.");
            ApiError::new(
                ErrorCode::NatsUnavailable,
                "the event could not be stored; retry with the same id",
            )
        })?;
    outcome.stored(accepted.duplicate, parsing.elapsed());
    tracing::debug!(
        n_channels = accepted.published.len(),
        duplicate = accepted.duplicate,
        "Event stored."
    );
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// The prologue of both publish routes (`POST /v1/events` and
/// `/v1/events/batch`): a token with the publish scope, a JSON body of at most
/// `limit` bytes. Returns the publishing service (the token's `sub`) and the body.
pub(crate) async fn read_publish(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(String, Bytes), ApiError> {
    let claims = authorize(state, headers, PUBLISH_SCOPE).await?;
    require_json(headers)?;
    let bytes = read_body(headers, body, limit).await?;
    // `sub` is a required claim, so every token has one.
    Ok((claims.sub.unwrap_or_default(), bytes))
}

/// Takes `stored_bytes` from `service`'s quota, or refuses with
/// `RATE_LIMITED` and the wait; `retry_hint` names where the caller finds it
/// (the `Retry-After` header, a batch result's `retry_after`).
pub(crate) fn take_quota(
    state: &AppState,
    service: &str,
    stored_bytes: u64,
    retry_hint: &str,
) -> Result<(), ApiError> {
    state.quotas.take(service, stored_bytes).map_err(|over| {
        tracing::debug!(service, stored_bytes, "Over the service's quota.");
        ApiError::new(
            ErrorCode::RateLimited,
            format!("`{service}` is over its publish quota; retry after {retry_hint}"),
        )
        .retry_after(over.retry_after_secs())
    })
}

/// A bearer service token with the configured audience and `scope`.
pub(crate) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    scope: &str,
) -> Result<ServiceClaims, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            ErrorCode::MissingToken,
            "send `Authorization: Bearer <service token>`",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidToken,
                "the Authorization header is not `Bearer <token>`",
            )
        })?;
    let claims: ServiceClaims = state
        .service_tokens
        .verify(&state.config.keys, token, &state.config.expect)
        .await
        .map_err(|err| ApiError::new(err.code(), err.to_string()))?;
    if !claims.has_scope(scope) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("the token lacks the `{scope}` scope"),
        ));
    }
    Ok(claims)
}

/// The body, refused with `PAYLOAD_TOO_LARGE` when over `limit` bytes: by
/// its `Content-Length` before reading, and while reading (a chunked body, or
/// one longer than it said).
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    if declared.is_some_and(|len: usize| len > limit) {
        return Err(too_large());
    }
    to_bytes(body, limit).await.map_err(|_| too_large())
}

pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send `Content-Type: application/json`",
        ))
    }
}
