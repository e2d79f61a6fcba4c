//! The body of `POST /v1/events/batch`, `{"events": [<envelope>, …]}`, split
//! into each event's own bytes, so that every event is parsed and refused on
//! its own: one bad event never blocks the others.
//!
//! Only the frame is checked here (JSON, one object with one `events` key
//! holding 1–[`MAX_BATCH_EVENTS`] values); what each value is, is the
//! business of [`super::parse_event`].

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::error_code::{ErrorBody, ErrorCode, FieldError};

/// The most events one batch may carry.
pub const MAX_BATCH_EVENTS: usize = 100;

/// The largest body `POST /v1/events/batch` takes: 1 MiB, sixteen full-size
/// envelopes, or 100 of some 10 KiB.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The one key of the batch object.
const EVENTS: &str = "events";
/// The start of the error for a repeated `events` key: answered as
/// `MALFORMED_JSON`, as a key repeated in an envelope is.
const REPEATED_KEY: &str = "the key `events` appears twice";

/// Splits a batch body into the bytes of each event, in order.
///
/// # Errors
/// The error body to answer the whole request with: `MALFORMED_JSON` (with
/// line and column) when the body is not JSON or repeats `events`;
/// `VALIDATION_FAILED` (path `events`) when it is not an object with only an
/// `events` array, or that array holds no event or more than
/// [`MAX_BATCH_EVENTS`].
///
/// ```
/// use herald_shared::envelope::split_batch;
/// let events = split_batch(br#"{"events": [{"a": 1}, 2]}"#).unwrap();
/// assert_eq!(events, [&br#"{"a": 1}"#[..], b"2"]);
/// ```
pub fn split_batch(body: &[u8]) -> Result<Vec<&[u8]>, ErrorBody> {
    let Batch(events) = serde_json::from_slice(body).map_err(|err| {
        let malformed = !err.is_data() || err.to_string().starts_with(REPEATED_KEY);
        if malformed {
            ErrorBody {
                line: Some(err.line()),
                column: Some(err.column()),
                ..ErrorBody::new(
                    ErrorCode::MalformedJson,
                    format!("body is not valid JSON: {err}"),
                )
            }
        } else {
            invalid(format!(
                "send {{\"events\": [<envelope>, …]}} with 1 to {MAX_BATCH_EVENTS} events: {err}"
            ))
        }
    })?;
    if events.is_empty() {
        return Err(invalid(format!(
            "send 1 to {MAX_BATCH_EVENTS} events; got none"
        )));
    }
    Ok(events.into_iter().map(|raw| raw.get().as_bytes()).collect())
}

fn invalid(message: String) -> ErrorBody {
    ErrorBody {
        errors: vec![FieldError {
            path: EVENTS.into(),
            message: message.clone(),
        }],
        ..ErrorBody::new(ErrorCode::ValidationFailed, message)
    }
}

/// `{"events": [...]}`: exactly one key, an array of at most
/// [`MAX_BATCH_EVENTS`] JSON values, borrowed from the body.
///
/// Hand-written rather than derived: a derived struct also takes the array
/// form `[[...]]`, and a derived sequence would collect a million values
/// before the count is checked.
struct Batch<'a>(Vec<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Batch<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(BatchVisitor)
    }
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Batch<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with an `events` array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut events = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != EVENTS {
                return Err(de::Error::unknown_field(&key, &[EVENTS]));
            }
            if events.is_some() {
                return Err(de::Error::custom(REPEATED_KEY));
            }
            events = Some(map.next_value::<Events<'de>>()?.0);
        }
        events
            .map(Batch)
            .ok_or_else(|| de::Error::missing_field(EVENTS))
    }
}

/// The `events` array, refused as soon as it holds one value too many.
struct Events<'a>(Vec<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Events<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(EventsVisitor)
    }
}

struct EventsVisitor;

impl<'de> Visitor<'de> for EventsVisitor {
    type Value = Events<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of 1 to {MAX_BATCH_EVENTS} events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::new();
        while let Some(event) = seq.next_element::<&'de RawValue>()? {
            if events.len() == MAX_BATCH_EVENTS {
                return Err(de::Error::custom(format!(
                    "more than {MAX_BATCH_EVENTS} events"
                )));
            }
            events.push(event);
        }
        Ok(Events(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> ErrorBody {
        split_batch(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn each_event_keeps_its_own_bytes_in_order() {
        let body = br#"{"events": [ {"id":"a","x":{"y":[1,2]}} ,"text", {"id":"a","id":"b"}]}"#;
        let events = split_batch(body).unwrap();
        assert_eq!(
            events,
            [
                &br#"{"id":"a","x":{"y":[1,2]}}"#[..],
                br#""text""#,
                br#"{"id":"a","id":"b"}"#,
            ],
            "a repeated key inside an event is that event's business"
        );
    }

    #[test]
    fn a_body_that_is_not_json_or_repeats_events_is_malformed() {
        for body in [
            r#"{"events": [}"#,
            "",
            r#"{"events": [{}]} x"#,
            r#"{"events": [{}], "events": [{}]}"#,
        ] {
            let error = refusal(body);
            assert_eq!(error.code, ErrorCode::MalformedJson, "{body}: {error:?}");
            assert!(error.line.is_some() && error.column.is_some(), "{body}");
        }
    }

    #[test]
    fn a_body_of_another_shape_or_size_fails_validation_on_events() {
        let hundred_and_one = format!(r#"{{"events": [{}]}}"#, vec!["{}"; 101].join(","));
        for body in [
            "[]",
            r#"[[{}]]"#,
            r#"{}"#,
            r#"{"events": {}}"#,
            r#"{"events": []}"#,
            r#"{"events": [{}], "extra": 1}"#,
            r#"{"id": "e1", "type": "calendar.event.deleted"}"#,
            &hundred_and_one,
        ] {
            let error = refusal(body);
            assert_eq!(error.code, ErrorCode::ValidationFailed, "{body}: {error:?}");
            assert_eq!(error.errors.len(), 1, "{body}");
            assert_eq!(error.errors[0].path, "events", "{body}");
        }
    }

    #[test]
    fn a_hundred_events_are_taken() {
        let body = format!(r#"{{"events": [{}]}}"#, vec!["{}"; 100].join(","));
        assert_eq!(split_batch(body.as_bytes()).unwrap().len(), 100);
    }
}
