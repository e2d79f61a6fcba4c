//! HTTP bodies other than the envelope and the error body, and the record of
//! a rejected domain message in the dead-letter stream.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    channel::Channel,
    envelope::Envelope,
    error_code::{ErrorBody, ErrorCode, FieldError},
    ids::EventId,
    presence::Member,
    timestamp::Timestamp,
};

/// The `202 Accepted` body of `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublishAccepted {
    pub id: EventId,
    /// True when every channel's notification had been stored before under
    /// this id (within the dedup window); nothing new was stored then.
    pub duplicate: bool,
    /// One entry per recipient channel, in audience order.
    pub published: Vec<PublishedChannel>,
}

/// The `200` body of the publisher's `GET /v1/presence/{namespace}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PresenceBody {
    pub channel: Channel,
    /// Sorted by user; at most `--presence-max-members` of them.
    pub members: Vec<Member>,
    /// More users are present than are listed.
    pub truncated: bool,
}

/// Where one recipient channel's notification was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublishedChannel {
    pub channel: Channel,
    /// The notification's sequence in the stream: the client's resume cursor.
    pub seq: u64,
}

/// The body of `POST /v1/events/batch`: 1–100 envelopes, at most 1 MiB in all
/// (`herald_shared::envelope::{MAX_BATCH_EVENTS, MAX_BATCH_BYTES}`).
///
/// Each envelope is validated, deduplicated and stored on its own; the
/// publisher splits the body with `envelope::split_batch` rather than
/// deserializing this type, so that one bad envelope is answered on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    #[schemars(length(min = 1, max = 100))]
    pub events: Vec<Envelope>,
}

/// The `200 OK` body of `POST /v1/events/batch`: one result per event, in
/// the order of the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PublishBatchResults {
    pub results: Vec<BatchResult>,
}

/// What became of one event of a batch: what `POST /v1/events` would have
/// answered for it alone, its status included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchResult {
    /// The HTTP status a single publish of this event would have had: 202
    /// when stored (or a duplicate), else its error code's status.
    pub status: u16,
    #[serde(flatten)]
    pub outcome: BatchOutcome,
    /// For a retryable refusal (`NATS_UNAVAILABLE`, `RATE_LIMITED`): the
    /// seconds to wait before sending the event again with the same `id`,
    /// as a single publish's `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// The body of one [`BatchResult`]: the 202 body or the error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum BatchOutcome {
    Accepted(PublishAccepted),
    Refused(ErrorBody),
}

impl BatchResult {
    /// The event was stored (or had been: a duplicate).
    pub fn accepted(accepted: PublishAccepted) -> Self {
        Self {
            status: 202,
            outcome: BatchOutcome::Accepted(accepted),
            retry_after: None,
        }
    }

    /// The event was refused with `error`; `retry_after` for a retryable one.
    pub fn refused(error: ErrorBody, retry_after: Option<u64>) -> Self {
        Self {
            status: error.code.http_status(),
            outcome: BatchOutcome::Refused(error),
            retry_after,
        }
    }
}

/// A domain message the publisher refused, as stored in the dead-letter stream
/// (`HERALD_DEAD_LETTER`) on `deadletter.<the domain subject's tail>`.
///
/// It is never delivered to anyone; it is there for operators to inspect,
/// fix and republish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    /// Why it was refused: `MALFORMED_JSON`, `PAYLOAD_TOO_LARGE`,
    /// `UNKNOWN_EVENT_TYPE`, `VALIDATION_FAILED`, or `NATS_UNAVAILABLE` when it
    /// could not be stored in `max attempts` deliveries.
    pub code: ErrorCode,
    /// A sentence for people; never parsed.
    pub message: String,
    /// The failed rules, for `VALIDATION_FAILED` only, as in the HTTP error body.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The subject the domain message was published on, e.g. `domain.calendar.event.updated`.
    pub subject: String,
    /// Its sequence in the domain stream (`HERALD_DOMAIN`).
    pub stream_seq: u64,
    /// How many times it had been delivered to a publisher, the last one included.
    pub deliveries: u64,
    /// When it was dead-lettered.
    pub dead_lettered_at: Timestamp,
    /// The original payload, byte for byte: as text when it is UTF-8, else in
    /// base64 (standard alphabet, padded); see `payload_encoding`.
    pub payload: String,
    /// How `payload` holds the original bytes.
    pub payload_encoding: PayloadEncoding,
}

/// How a [`DeadLetter`] holds the original payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PayloadEncoding {
    /// The payload was valid UTF-8 and is kept as text.
    #[serde(rename = "utf-8")]
    Utf8,
    /// The payload was not UTF-8; `payload` is its base64 (standard alphabet, padded).
    #[serde(rename = "base64")]
    Base64,
}

impl DeadLetter {
    /// The record of `payload`, refused with `error`, dead-lettered now.
    pub fn new(
        error: ErrorBody,
        subject: impl Into<String>,
        stream_seq: u64,
        deliveries: u64,
        payload: &[u8],
    ) -> Self {
        let (payload, payload_encoding) = match std::str::from_utf8(payload) {
            Ok(text) => (text.to_string(), PayloadEncoding::Utf8),
            Err(_) => (BASE64.encode(payload), PayloadEncoding::Base64),
        };
        Self {
            code: error.code,
            message: error.message,
            errors: error.errors,
            subject: subject.into(),
            stream_seq,
            deliveries,
            dead_lettered_at: Timestamp::now(),
            payload,
            payload_encoding,
        }
    }

    /// The original payload's bytes.
    ///
    /// # Errors
    /// `payload` is not valid base64 although `payload_encoding` says it is.
    pub fn original_payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self.payload_encoding {
            PayloadEncoding::Utf8 => Ok(self.payload.clone().into_bytes()),
            PayloadEncoding::Base64 => BASE64.decode(&self.payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_result_is_the_single_body_plus_its_status() {
        let accepted = BatchResult::accepted(PublishAccepted {
            id: EventId::parse("e1").unwrap(),
            duplicate: false,
            published: vec![],
        });
        let refused =
            BatchResult::refused(ErrorBody::new(ErrorCode::NatsUnavailable, "down"), Some(1));
        let json = serde_json::to_value([&accepted, &refused]).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"status": 202, "id": "e1", "duplicate": false, "published": []},
                {"status": 503, "code": "NATS_UNAVAILABLE", "message": "down", "retry_after": 1},
            ])
        );
        let back: Vec<BatchResult> = serde_json::from_value(json).unwrap();
        assert_eq!(back, [accepted, refused]);
    }

    #[test]
    fn dead_letters_keep_the_payload_as_text_or_base64() {
        let error = ErrorBody::new(ErrorCode::MalformedJson, "not JSON");
        let text = DeadLetter::new(error.clone(), "domain.x", 3, 1, "{\"a\": \"é\"".as_bytes());
        assert_eq!(text.payload_encoding, PayloadEncoding::Utf8);
        assert_eq!(text.payload, "{\"a\": \"é\"");
        assert_eq!(text.original_payload().unwrap(), "{\"a\": \"é\"".as_bytes());

        let bytes = [0xff, b'{', 0x00, 0xc3];
        let binary = DeadLetter::new(error, "domain.x", 4, 2, &bytes);
        assert_eq!(binary.payload_encoding, PayloadEncoding::Base64);
        assert_eq!(binary.payload, "/3sAww==");
        assert_eq!(binary.original_payload().unwrap(), bytes);

        let json = serde_json::to_value(&binary).unwrap();
        assert_eq!(json["payload_encoding"], "base64");
        assert_eq!(json["code"], "MALFORMED_JSON");
        assert!(json.get("errors").is_none(), "no empty errors list");
        let back: DeadLetter = serde_json::from_value(json).unwrap();
        assert_eq!(back, binary);
    }
}
