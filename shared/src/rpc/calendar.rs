//! Requests of the `calendar.event.*` methods: the same field rules as the
//! events of the same names (`events::calendar`), so whatever a call creates
//! can be published as an event.

use garde::Validate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::Duration;

use super::CrossRules;
use crate::{
    error_code::FieldError,
    events::calendar::{RsvpResponse, is_after, optional_no_control_characters},
    ids::UserId,
    text::no_control_characters,
    timestamp::Timestamp,
};

/// The widest window `calendar.event.list` answers: about a quarter.
pub const MAX_LIST_DAYS: i64 = 92;

/// `data` of `calendar.event.create`; the service picks the event id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub calendar_id: String,
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

impl CrossRules for CreateEvent {}

/// `data` of `calendar.event.update`: the fields to change, at least one.
///
/// When both times are given `ends_at` must be after `starts_at`; when only
/// one is, the service checks it against the stored other one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 3))]
pub struct UpdateEvent {
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub calendar_id: String,
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(
        length(chars, min = 1, max = 200),
        custom(optional_no_control_characters)
    )]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub starts_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(custom(optional_after(&self.starts_at)))]
    pub ends_at: Option<Timestamp>,
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

impl CrossRules for UpdateEvent {
    fn cross_rules(&self) -> Vec<FieldError> {
        let changes_something = self.title.is_some()
            || self.starts_at.is_some()
            || self.ends_at.is_some()
            || self.all_day.is_some()
            || self.location.is_some()
            || self.attendees.is_some();
        if changes_something {
            Vec::new()
        } else {
            vec![FieldError {
                path: "data".into(),
                message: "must change at least one of title, starts_at, ends_at, all_day, \
                          location, attendees"
                    .into(),
            }]
        }
    }
}

/// `data` of `calendar.event.delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteEvent {
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub calendar_id: String,
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub event_id: String,
}

impl CrossRules for DeleteEvent {}

/// `data` of `calendar.event.rsvp`: the caller answers for themself (the
/// service takes the user from `Herald-User`, so there is no `user_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RsvpEvent {
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub calendar_id: String,
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub event_id: String,
    #[garde(skip)]
    pub response: RsvpResponse,
}

impl CrossRules for RsvpEvent {}

/// `data` of `calendar.event.list`: `from` < `to`, at most 92 days apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListEvents {
    #[garde(length(chars, min = 1, max = 128), custom(no_control_characters))]
    pub calendar_id: String,
    #[garde(skip)]
    pub from: Timestamp,
    /// After `from`, and at most 92 days after it.
    #[garde(custom(within_window(&self.from)))]
    pub to: Timestamp,
}

impl CrossRules for ListEvents {}

fn optional_after(
    starts_at: &Option<Timestamp>,
) -> impl FnOnce(&Option<Timestamp>, &()) -> garde::Result + '_ {
    move |ends_at, _| match (starts_at, ends_at) {
        (Some(starts_at), Some(ends_at)) => is_after(starts_at)(ends_at, &()),
        _ => Ok(()),
    }
}

fn within_window(from: &Timestamp) -> impl FnOnce(&Timestamp, &()) -> garde::Result + '_ {
    move |to, _| {
        if to.0 <= from.0 {
            Err(garde::Error::new("must be after from"))
        } else if to.0 - from.0 > Duration::days(MAX_LIST_DAYS) {
            Err(garde::Error::new(format!(
                "must be at most {MAX_LIST_DAYS} days after from"
            )))
        } else {
            Ok(())
        }
    }
}
