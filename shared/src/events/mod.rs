//! The registry of event types: wire name → `data` type with its garde rules.
//!
//! Adding a type is one line in the `event_types!` invocation below plus its
//! data struct; parsing, validation, schemas and the domain subject follow.

pub mod calendar;

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error_code::FieldError;

macro_rules! event_types {
    ($( $(#[$doc:meta])* $variant:ident => $wire:literal, $data:ty; )+) => {
        /// A registered event type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType {
            $( $(#[$doc])* $variant, )+
        }

        /// The validated `data` of an event, one variant per registered type.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(untagged)]
        pub enum EventData {
            $( $variant($data), )+
        }

        impl EventType {
            /// Every registered type.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            /// The wire name, e.g. `calendar.event.updated`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $wire, )+
                }
            }

            /// The registered type with this wire name.
            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $( $wire => Some(Self::$variant), )+
                    _ => None,
                }
            }

            /// Parses and validates `data` for this type.
            ///
            /// # Errors
            /// Every broken rule, each with its path under `data`.
            pub fn parse_data(self, data: serde_json::Value) -> Result<EventData, Vec<FieldError>> {
                match self {
                    $( Self::$variant => validate_data::<$data>(data).map(EventData::$variant), )+
                }
            }

            /// The JSON Schema of this type's `data`.
            pub fn data_schema(self, generator: &mut SchemaGenerator) -> Schema {
                match self {
                    $( Self::$variant => generator.root_schema_for::<$data>(), )+
                }
            }
        }
    };
}

event_types! {
    /// A calendar event was created.
    CalendarEventCreated => "calendar.event.created", calendar::EventCreated;
    /// A calendar event changed; `changes` names the fields.
    CalendarEventUpdated => "calendar.event.updated", calendar::EventUpdated;
    /// A calendar event was deleted.
    CalendarEventDeleted => "calendar.event.deleted", calendar::EventDeleted;
    /// An attendee answered an invitation.
    CalendarEventRsvp => "calendar.event.rsvp", calendar::EventRsvp;
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JsonSchema for EventType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventType".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

/// Deserializes `data` into `T` (unknown fields rejected), then runs its garde rules.
pub(crate) fn validate_data<T>(data: serde_json::Value) -> Result<T, Vec<FieldError>>
where
    T: DeserializeOwned + garde::Validate<Context = ()>,
{
    let parsed: T = serde_path_to_error::deserialize(data).map_err(|err| {
        vec![FieldError {
            path: prefixed("data", &err.path().to_string()),
            message: err.into_inner().to_string(),
        }]
    })?;
    parsed
        .validate()
        .map_err(|report| garde_errors("data", &report))?;
    Ok(parsed)
}

/// Turns a garde report into field errors whose paths start at `prefix`.
pub(crate) fn garde_errors(prefix: &str, report: &garde::Report) -> Vec<FieldError> {
    report
        .iter()
        .map(|(path, error)| FieldError {
            path: prefixed(prefix, &path.to_string()),
            message: error.message().to_string(),
        })
        .collect()
}

/// Joins a path prefix and a relative path; serde_path_to_error says `.` for the root.
pub(crate) fn prefixed(prefix: &str, path: &str) -> String {
    match (prefix, path) {
        (p, "" | ".") => p.to_string(),
        ("", path) => path.to_string(),
        (p, path) if path.starts_with('[') => format!("{p}{path}"),
        (p, path) => format!("{p}.{path}"),
    }
}
