//! `POST /v1/events/batch`: up to 100 events in one request, each parsed,
//! validated, bound-checked, taken from the quota, deduplicated and stored on
//! its own, answered `200` with one result per event, in order.
//!
//! The request as a whole is refused only for what concerns all of it: the
//! token, the media type, a body over 1 MiB, or a body that is not
//! `{"events": [...]}` with 1–100 events. Past that, one bad event never
//! blocks the others. The valid events' notifications go out as one pipeline
//! (`publish::publish_all`): acks are windowed across the whole batch.

use std::time::Instant;

use async_nats::connection::State as NatsState;
use axum::{Json, body::Body, extract::State, http::HeaderMap};
use herald_shared::{
    api::{BatchResult, PublishBatchResults},
    envelope::{MAX_BATCH_BYTES, MAX_ENVELOPE_BYTES, ValidEvent, parse_event, split_batch},
    error_code::{ErrorBody, ErrorCode},
    trace_context,
};
use tracing::Instrument;

use crate::{
    error::ApiError,
    http_ingest::{read_publish, take_quota},
    metrics::{EventOutcome, Source},
    publish::{check_stored_bytes, publish_all},
    state::AppState,
};

/// One span per batch; it continues the caller's trace, and every
/// notification stored for the batch carries it on to the delivery.
pub(crate) async fn post_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishBatchResults>, ApiError> {
    let span = tracing::info_span!(
        "post_batch",
        n_events = tracing::field::Empty,
        n_stored = tracing::field::Empty,
    );
    trace_context::set_parent_http(&span, &headers);
    accept_batch(state, headers, body).instrument(span).await
}

async fn accept_batch(
    state: AppState,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishBatchResults>, ApiError> {
    let (service, bytes) = match read_publish(&state, &headers, body, MAX_BATCH_BYTES).await {
        Ok(read) => read,
        Err(refusal) => {
            // Refused as a whole, it counts as one rejected event of no known
            // type, as a refused single publish does.
            drop(state.metrics.event(Source::Http));
            return Err(refusal);
        }
    };
    let parsing = Instant::now();
    let raw_events = split_batch(&bytes).map_err(|refusal| {
        drop(state.metrics.event(Source::Http));
        ApiError::from(refusal)
    })?;
    let span = tracing::Span::current();
    span.record("n_events", raw_events.len());

    let items: Vec<Item<'_>> = raw_events
        .into_iter()
        .map(|raw| check_event(&state, &service, raw))
        .collect();

    let connected = state.nats.connection_state() == NatsState::Connected;
    let ready: Vec<&ValidEvent> = items
        .iter()
        .filter_map(|item| match item {
            Item::Ready { event, .. } if connected => Some(event),
            _ => None,
        })
        .collect();
    let mut stored = publish_all(&state.jetstream, &ready, state.config.publish_window)
        .await
        .into_iter();
    drop(ready);

    let mut n_stored = 0_usize;
    let results = items
        .into_iter()
        .map(|item| match item {
            Item::Refused(refusal) => refusal,
            // Counted as `failed`, as it stands since `storing`.
            Item::Ready { .. } if !connected => nats_unavailable("not connected to NATS"),
            Item::Ready { mut outcome, .. } => match stored.next() {
                Some(Ok(accepted)) => {
                    outcome.stored(accepted.duplicate, parsing.elapsed());
                    n_stored += 1;
                    BatchResult::accepted(accepted)
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "Publishing an event of a batch failed.");
                    nats_unavailable("the event could not be stored; retry with the same id")
                }
                None => unreachable!("one result per event sent"),
            },
        })
        .collect();
    span.record("n_stored", n_stored);
    tracing::debug!(n_stored, "Batch handled.");
    Ok(Json(PublishBatchResults { results }))
}

/// What an event of the batch is, before storing: refused, or valid and
/// counted as being stored.
enum Item<'a> {
    Refused(BatchResult),
    Ready {
        event: ValidEvent,
        outcome: EventOutcome<'a>,
    },
}

/// One event, checked as `POST /v1/events` checks a body: its size, then
/// parsed and validated, its stored bytes bounded, its quota taken.
fn check_event<'a>(state: &'a AppState, service: &str, raw: &[u8]) -> Item<'a> {
    // Counted once, however this ends; `rejected` until it is stored.
    let mut outcome = state.metrics.event(Source::Http);
    if raw.len() > MAX_ENVELOPE_BYTES {
        return Item::Refused(refused(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the event exceeds {MAX_ENVELOPE_BYTES} bytes"),
        )));
    }
    let event = match parse_event(raw) {
        Ok(event) => event,
        Err(refused) => {
            outcome.claimed_type(refused.claimed_type);
            return Item::Refused(self::refused(refused.body.into()));
        }
    };
    outcome.of_type(event.event_type);
    let stored_bytes = match check_stored_bytes(&event, state.config.limits.max_event_stored_bytes)
    {
        Ok(bytes) => bytes,
        Err(refusal) => return Item::Refused(refused(refusal.into())),
    };
    if let Err(refusal) = take_quota(state, service, stored_bytes, "`retry_after`") {
        return Item::Refused(refused(refusal));
    }
    outcome.storing(event.event_type);
    Item::Ready { event, outcome }
}

/// An event's refusal: its error body and status, and its `Retry-After` as
/// `retry_after`.
fn refused(error: ApiError) -> BatchResult {
    let (body, retry_after) = error.into_parts();
    BatchResult::refused(body, retry_after)
}

fn nats_unavailable(message: &str) -> BatchResult {
    refused(ApiError::from(ErrorBody::new(
        ErrorCode::NatsUnavailable,
        message,
    )))
}
