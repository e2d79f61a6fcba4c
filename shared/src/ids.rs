//! Identifier newtypes: user ids, namespace names and event ids.
//!
//! "Parse, don't validate": the only way to get a [`UserId`] or a [`Namespace`]
//! is through a constructor that enforces the SPEC's rules, so nothing
//! downstream ever sees an unchecked string.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} long, got {len}")]
    TooLong { max: usize, len: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
}

fn check(s: &str, max: usize, len: fn(&str) -> usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    let len = len(s);
    if len > max {
        return Err(IdError::TooLong { max, len });
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

/// A user id, as a JWT `sub` holds it: 1–256 bytes of UTF-8, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

/// A namespace name: 1–128 bytes of UTF-8, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

/// An event id: the idempotency key of a published event, 1–128 characters,
/// no control characters (it travels in a NATS header).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

// === impl UserId / Namespace / EventId ===

macro_rules! id_impls {
    ($ty:ident, $max:expr, $len:expr, $unit:literal) => {
        impl $ty {
            /// The maximum length (bytes for user ids and namespaces, characters for event ids).
            pub const MAX_LEN: usize = $max;

            /// Checks `s` against the identifier rules.
            ///
            /// # Errors
            /// [`IdError`] when `s` is empty, too long, or holds a control character.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check(&s, Self::MAX_LEN, $len)?;
                Ok(Self(s))
            }

            /// The identifier as given.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "pattern": "^[^\\p{Cc}]+$",
                    "description": concat!("1–", stringify!($max), " ", $unit, ", no control characters")
                })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_impls!(UserId, 256, str::len, "bytes of UTF-8");
id_impls!(Namespace, 128, str::len, "bytes of UTF-8");
id_impls!(EventId, 128, |s| s.chars().count(), "characters");

impl EventId {
    /// A fresh, time-ordered id (UUIDv7), used when an HTTP publisher sends none.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The id of a domain message (NATS ingest) that sends none:
    /// `domain-<stream seq>-<stored at, Unix ns>`.
    ///
    /// Derived from the message's place in the domain stream rather than
    /// generated, so every redelivery of the message (after a crash, a lost
    /// ack, a retry) is the same event to the notification stream's dedup
    /// window, and is stored once. The timestamp, when JetStream stored the
    /// message, tells apart messages of a recreated domain stream, whose
    /// sequences restart at 1.
    pub fn for_domain_message(stream_seq: u64, stored_at: time::OffsetDateTime) -> Self {
        // At most 7 + 20 + 1 + 20 ASCII characters: well within MAX_LEN.
        Self(format!(
            "domain-{stream_seq}-{}",
            stored_at.unix_timestamp_nanos()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_the_byte_and_control_rules() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("Zoë Ångström 山田").is_ok());
        assert!(
            UserId::parse("*").is_ok(),
            "wildcards are fine as ids; escaping defuses them"
        );
        assert_eq!(UserId::parse(""), Err(IdError::Empty));
        assert_eq!(UserId::parse("a\nb"), Err(IdError::ControlCharacter));
        assert!(UserId::parse("x".repeat(256)).is_ok());
        assert_eq!(
            UserId::parse("x".repeat(257)),
            Err(IdError::TooLong { max: 256, len: 257 })
        );
        // 86 three-byte characters are 258 bytes: the limit is bytes, not characters.
        assert!(UserId::parse("山".repeat(86)).is_err());
        assert!(Namespace::parse("n".repeat(129)).is_err());
    }

    #[test]
    fn domain_message_ids_are_stable_and_valid() {
        let stored_at = time::macros::datetime!(2026-11-26 10:00:00.000000123 UTC);
        let id = EventId::for_domain_message(42, stored_at);
        assert_eq!(id.as_str(), "domain-42-1795687200000000123");
        assert_eq!(id, EventId::for_domain_message(42, stored_at));
        assert!(EventId::parse(id.as_str()).is_ok());
        let longest = EventId::for_domain_message(u64::MAX, stored_at);
        assert!(EventId::parse(longest.as_str()).is_ok());
    }

    #[test]
    fn ids_deserialize_through_the_same_rules() {
        let err = serde_json::from_str::<Namespace>("\"bad\\u0007\"").unwrap_err();
        assert!(err.to_string().contains("control"), "{err}");
    }
}
