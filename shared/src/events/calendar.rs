//! `calendar.event.*` data types and their rules.

use garde::Validate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ids::UserId, text::no_control_characters, timestamp::Timestamp};

/// `data` of `calendar.event.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventCreated {
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub calendar_id: String,
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub event_id: String,
    #[garde(length(chars, min = 1, max = 200), custom(no_control_characters))]
    pub title: String,
    #[garde(skip)]
    pub starts_at: Timestamp,
    /// Must be after `starts_at`.
    #[garde(custom(is_after(&self.starts_at)))]
    pub ends_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub all_day: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(length(chars, max = 200), custom(optional_no_control_characters))]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(length(max = 1000))]
    pub attendees: Option<Vec<UserId>>,
}

/// `data` of `calendar.event.updated`: the event as it is now, and what changed.
///
/// The fields repeat [`EventCreated`]'s on purpose: serde cannot combine
/// `flatten` with `deny_unknown_fields`, and unknown fields must be refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventUpdated {
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub calendar_id: String,
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub event_id: String,
    #[garde(length(chars, min = 1, max = 200), custom(no_control_characters))]
    pub title: String,
    #[garde(skip)]
    pub starts_at: Timestamp,
    /// Must be after `starts_at`.
    #[garde(custom(is_after(&self.starts_at)))]
    pub ends_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub all_day: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(length(chars, max = 200), custom(optional_no_control_characters))]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(length(max = 1000))]
    pub attendees: Option<Vec<UserId>>,
    /// The fields that changed; at least one.
    #[garde(length(min = 1))]
    pub changes: Vec<ChangedField>,
}

/// A field name `changes` may list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangedField {
    CalendarId,
    EventId,
    Title,
    StartsAt,
    EndsAt,
    AllDay,
    Location,
    Attendees,
}

/// `data` of `calendar.event.deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventDeleted {
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub calendar_id: String,
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub event_id: String,
}

/// `data` of `calendar.event.rsvp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRsvp {
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub calendar_id: String,
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub event_id: String,
    #[garde(skip)]
    pub user_id: UserId,
    #[garde(skip)]
    pub response: RsvpResponse,
}

/// An attendee's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RsvpResponse {
    Accepted,
    Declined,
    Tentative,
}

pub(crate) fn is_after(
    starts_at: &Timestamp,
) -> impl FnOnce(&Timestamp, &()) -> garde::Result + '_ {
    move |ends_at, _| {
        if ends_at > starts_at {
            Ok(())
        } else {
            Err(garde::Error::new("must be after starts_at"))
        }
    }
}

pub(crate) fn optional_no_control_characters(
    value: &Option<String>,
    context: &(),
) -> garde::Result {
    value
        .as_deref()
        .map_or(Ok(()), |value| no_control_characters(value, context))
}
