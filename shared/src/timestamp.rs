//! `Timestamp`: the RFC 3339 time of envelopes, frames and dead letters,
//! without leap seconds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// An RFC 3339 timestamp, without leap seconds.
///
/// RFC 3339 allows a second `60`; the `time` crate reads one as
/// `23:59:59.999999999`, a time the sender did not send. Unix time, JetStream
/// and browsers have no leap seconds either, so Herald refuses them
/// (`VALIDATION_FAILED`): the sender chooses `23:59:59` or the next second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(#[serde(with = "rfc3339_without_leap_seconds")] pub OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }
}

mod rfc3339_without_leap_seconds {
    use serde::{Deserialize, Deserializer, de::Error as _};
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};

    pub(super) use time::serde::rfc3339::serialize;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        let parsed = OffsetDateTime::parse(&text, &Rfc3339)
            .map_err(|err| D::Error::custom(format!("not an RFC 3339 time: {err}")))?;
        // Parsed, so `YYYY-MM-DDTHH:MM:SS` leads: the second is at 17..19.
        if text.get(17..19) == Some("60") {
            return Err(D::Error::custom(
                "a leap second (second 60) is not accepted; send 23:59:59 or the next second",
            ));
        }
        Ok(parsed)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}
