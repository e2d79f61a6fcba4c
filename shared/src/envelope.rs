//! The event envelope domain services send, its validation, and the
//! notification stored per recipient channel.

mod batch;
mod json;

use std::collections::HashSet;

use garde::Validate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    channel::Channel,
    error_code::{ErrorBody, ErrorCode, FieldError},
    events::{EventData, EventType},
    ids::{EventId, Namespace, UserId},
    registry::{garde_errors, prefixed},
    text::no_control_characters,
    timestamp::Timestamp,
};

/// The largest body `POST /v1/events` takes, and the largest domain message.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

pub use batch::{MAX_BATCH_BYTES, MAX_BATCH_EVENTS, split_batch};

/// The body of `POST /v1/events`, and of a domain message on `domain.<type>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Idempotency key, 1–128 characters. When absent: a UUIDv7 over HTTP;
    /// over NATS `domain-<stream seq>-<stored at, Unix ns>`, the same on every
    /// redelivery of the domain message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub id: Option<EventId>,
    /// A registered event type.
    #[serde(rename = "type")]
    #[garde(skip)]
    pub event_type: String,
    /// Who sent the event, 1–64 characters.
    #[garde(length(chars, min = 1, max = 64), custom(no_control_characters))]
    pub source: String,
    /// When it happened (RFC 3339). When absent: now over HTTP; over NATS when
    /// the domain stream stored the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub time: Option<Timestamp>,
    #[garde(dive)]
    pub audience: Audience,
    /// The type's data; see `proto-schemas/schemas/events/`.
    #[garde(skip)]
    pub data: serde_json::Value,
}

/// Who receives the event: up to 1000 users and 100 namespaces, at least one in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    #[serde(default)]
    #[garde(length(max = 1000))]
    pub users: Vec<UserId>,
    #[serde(default)]
    #[garde(length(max = 100))]
    pub namespaces: Vec<Namespace>,
}

/// An event that passed every rule; the only thing the publisher stores.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    pub id: EventId,
    pub event_type: EventType,
    pub source: String,
    pub time: Timestamp,
    /// Recipient channels, users first, each once.
    pub channels: Vec<Channel>,
    pub data: EventData,
}

/// What is stored per recipient channel: the same bytes for every channel of
/// an event. The channel is the message's subject and the `seq` its stream
/// sequence, so neither is repeated here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Notification<D = serde_json::Value> {
    pub id: EventId,
    pub event_type: String,
    pub source: String,
    pub time: Timestamp,
    pub data: D,
}

impl ValidEvent {
    /// The stored notification, borrowing this event's data.
    pub fn notification(&self) -> Notification<&EventData> {
        Notification {
            id: self.id.clone(),
            event_type: self.event_type.as_str().to_string(),
            source: self.source.clone(),
            time: self.time,
            data: &self.data,
        }
    }
}

/// Parses and validates an envelope from raw bytes, as received over HTTP:
/// an envelope without `id` gets a fresh UUIDv7, one without `time` now.
///
/// # Errors
/// The error body to answer with: `MALFORMED_JSON` (with line and column;
/// also for a key repeated in any object), `UNKNOWN_EVENT_TYPE`, or
/// `VALIDATION_FAILED` listing every broken rule (control characters in an
/// envelope string, a leap second, …).
pub fn parse_event(body: &[u8]) -> Result<ValidEvent, Refused> {
    parse_event_with_defaults(body, EventId::generate, Timestamp::now)
}

/// [`parse_event`] with the `id` and `time` an envelope gets when it has none.
///
/// NATS ingest derives both from the domain message
/// ([`EventId::for_domain_message`], the time JetStream stored it), so every
/// redelivery of a message parses to the same event and is stored once.
///
/// # Errors
/// As [`parse_event`].
pub fn parse_event_with_defaults(
    body: &[u8],
    default_id: impl FnOnce() -> EventId,
    default_time: impl FnOnce() -> Timestamp,
) -> Result<ValidEvent, Refused> {
    let value = json::from_slice(body).map_err(|err| Refused {
        body: ErrorBody {
            line: Some(err.line()),
            column: Some(err.column()),
            ..ErrorBody::new(
                ErrorCode::MalformedJson,
                format!("body is not valid JSON: {err}"),
            )
        },
        claimed_type: None,
    })?;
    let claimed_type = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .and_then(EventType::parse);
    check_envelope(value, default_id, default_time).map_err(|body| Refused { body, claimed_type })
}

/// Why an envelope was refused: the error body to answer with, and the
/// registered type the envelope names, if it names one, so that a refusal is
/// counted under its type without reading the body twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub body: ErrorBody,
    pub claimed_type: Option<EventType>,
}

impl From<Refused> for ErrorBody {
    fn from(refused: Refused) -> Self {
        refused.body
    }
}

/// [`parse_event_with_defaults`] once the body is JSON.
fn check_envelope(
    value: serde_json::Value,
    default_id: impl FnOnce() -> EventId,
    default_time: impl FnOnce() -> Timestamp,
) -> Result<ValidEvent, ErrorBody> {
    let envelope: Envelope = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = prefixed("", &err.path().to_string());
        validation_failed(vec![FieldError {
            path,
            message: err.into_inner().to_string(),
        }])
    })?;
    // Checked before the registry, so the refusal names the field rather
    // than echoing the control characters back as an unknown type.
    if let Err(err) = no_control_characters(&envelope.event_type, &()) {
        return Err(validation_failed(vec![FieldError {
            path: "type".into(),
            message: err.message().to_string(),
        }]));
    }
    let Some(event_type) = EventType::parse(&envelope.event_type) else {
        let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        return Err(ErrorBody::new(
            ErrorCode::UnknownEventType,
            format!(
                "unknown event type `{}`; registered: {}",
                envelope.event_type,
                known.join(", ")
            ),
        ));
    };

    let mut errors = match envelope.validate() {
        Ok(()) => Vec::new(),
        Err(report) => garde_errors("", &report),
    };
    if envelope.audience.users.is_empty() && envelope.audience.namespaces.is_empty() {
        errors.push(FieldError {
            path: "audience".into(),
            message: "needs at least one user or namespace".into(),
        });
    }
    let data = event_type
        .parse_data(envelope.data)
        .map_err(|e| errors.extend(e))
        .ok();
    let Some(data) = data.filter(|_| errors.is_empty()) else {
        return Err(validation_failed(errors));
    };

    let mut seen = HashSet::new();
    let channels = (envelope.audience.users.into_iter().map(Channel::user))
        .chain(
            envelope
                .audience
                .namespaces
                .into_iter()
                .map(Channel::namespace),
        )
        .filter(|channel| seen.insert(channel.clone()))
        .collect();
    Ok(ValidEvent {
        id: envelope.id.unwrap_or_else(default_id),
        event_type,
        source: envelope.source,
        time: envelope.time.unwrap_or_else(default_time),
        channels,
        data,
    })
}

fn validation_failed(errors: Vec<FieldError>) -> ErrorBody {
    let summary = match errors.as_slice() {
        [one] => format!("{}: {}", one.path, one.message),
        many => format!("{} rules failed", many.len()),
    };
    ErrorBody {
        errors,
        ..ErrorBody::new(ErrorCode::ValidationFailed, summary)
    }
}

#[cfg(test)]
mod tests;
