//! One calendar as it is stored: its members, its events, and the domain
//! events of its last change that are not yet known to be published (the
//! outbox). Pure: no NATS here, so every rule is unit-tested.
//!
//! A calendar is one key-value entry (see `store`), so every rule that spans
//! events (a room booked twice is `SLOT_TAKEN`) and membership are checked
//! and written in one compare-and-set.

use std::collections::{BTreeMap, BTreeSet};

use herald_shared::{
    envelope::{Audience, Envelope, MAX_ENVELOPE_BYTES},
    events::calendar::{
        ChangedField, EventCreated, EventDeleted, EventRsvp, EventUpdated, RsvpResponse,
    },
    ids::{EventId, UserId},
    timestamp::Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;

/// Events one calendar holds at most: it is one key-value entry, rewritten
/// whole on every change.
pub const MAX_EVENTS: usize = 500;
/// Members one calendar has at most: each is a recipient of its events, and
/// an envelope reaches at most 1,000 users.
pub const MAX_MEMBERS: usize = 500;
/// The most bytes one event may store in Herald (its size times its
/// recipients): the publisher's default `--max-event-stored-bytes`.
pub const MAX_EVENT_STORED_BYTES: usize = 16 << 20;
/// `source` of the envelopes this service publishes.
pub const SOURCE: &str = "calendar-service";

/// A calendar id: 1–128 characters, no control characters (the rule of
/// `calendar_id` in the `calendar.event.*` events).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CalendarId(String);

impl CalendarId {
    /// # Errors
    /// An empty or too long id, or one with a control character.
    pub fn parse(id: impl Into<String>) -> Result<Self, &'static str> {
        let id = id.into();
        let chars = id.chars().count();
        if !(1..=128).contains(&chars) {
            return Err("must be 1–128 characters");
        }
        if id.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stored calendar. This is the example service's own storage format, not
/// part of Herald's wire contract.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calendar {
    pub members: BTreeSet<UserId>,
    pub events: BTreeMap<String, Event>,
    /// The envelopes of the last change, written with it and removed once
    /// JetStream acknowledged them: a replica killed between the write and
    /// the acks leaves them here, and the next change publishes them again
    /// (same ids, so deduplicated) before its own.
    #[serde(default)]
    pub outbox: Vec<Envelope>,
}

/// One event, as `calendar.event.list` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub title: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_day: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attendees: Vec<UserId>,
    /// Each user's latest answer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rsvps: BTreeMap<UserId, RsvpResponse>,
}

/// The fields of a new event (`calendar.event.create`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub title: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub all_day: Option<bool>,
    pub location: Option<String>,
    pub attendees: Option<Vec<UserId>>,
}

/// The fields `calendar.event.update` changes; `None` keeps the field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub title: Option<String>,
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
    pub all_day: Option<bool>,
    pub location: Option<String>,
    pub attendees: Option<Vec<UserId>>,
}

/// A change to a calendar.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create(NewEvent),
    Update {
        event_id: String,
        patch: Patch,
    },
    Delete {
        event_id: String,
    },
    Rsvp {
        event_id: String,
        response: RsvpResponse,
    },
}

/// What a change did: the reply's `result`, and the domain event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub result: serde_json::Value,
    pub envelope: Envelope,
}

// === impl Calendar ===

impl Calendar {
    pub fn is_member(&self, user: &UserId) -> bool {
        self.members.contains(user)
    }

    /// Adds `user` to the members; whether they were new.
    ///
    /// # Errors
    /// `CALENDAR_FULL` at [`MAX_MEMBERS`].
    pub fn join(&mut self, user: &UserId) -> Result<bool, ServiceError> {
        if self.members.contains(user) {
            return Ok(false);
        }
        if self.members.len() >= MAX_MEMBERS {
            return Err(ServiceError::CalendarFull(format!(
                "a calendar has at most {MAX_MEMBERS} members"
            )));
        }
        Ok(self.members.insert(user.clone()))
    }

    /// The events that overlap `[from, to)`, by start.
    pub fn list(&self, from: Timestamp, to: Timestamp) -> Vec<&Event> {
        let mut events: Vec<&Event> = self
            .events
            .values()
            .filter(|e| e.starts_at < to && e.ends_at > from)
            .collect();
        events.sort_by(|a, b| (a.starts_at, &a.event_id).cmp(&(b.starts_at, &b.event_id)));
        events
    }

    /// Applies `change` by `user` (a member: checked by the caller), with
    /// `new_id` the id of a created event and `envelope_id` the domain
    /// event's id.
    ///
    /// # Errors
    /// `NOT_FOUND`, `SLOT_TAKEN`, `CALENDAR_FULL`, or `VALIDATION_FAILED` when
    /// an update would end an event before it starts.
    pub fn apply(
        &mut self,
        calendar_id: &CalendarId,
        user: &UserId,
        change: Change,
        new_id: &str,
        envelope_id: EventId,
    ) -> Result<Applied, ServiceError> {
        // Nothing is changed until the envelope is known to be acceptable.
        let (event_type, data, result, audience_of, effect) = match change {
            Change::Create(new) => {
                if self.events.len() >= MAX_EVENTS {
                    return Err(ServiceError::CalendarFull(format!(
                        "a calendar holds at most {MAX_EVENTS} events"
                    )));
                }
                let event = Event {
                    event_id: new_id.to_string(),
                    title: new.title,
                    starts_at: new.starts_at,
                    ends_at: new.ends_at,
                    all_day: new.all_day.unwrap_or(false),
                    location: new.location.filter(|l| !l.is_empty()),
                    attendees: new.attendees.unwrap_or_default(),
                    rsvps: BTreeMap::new(),
                };
                self.check_slot(&event)?;
                let data = serde_json::to_value(EventCreated {
                    calendar_id: calendar_id.as_str().into(),
                    event_id: event.event_id.clone(),
                    title: event.title.clone(),
                    starts_at: event.starts_at,
                    ends_at: event.ends_at,
                    all_day: event.all_day.then_some(true),
                    location: event.location.clone(),
                    attendees: non_empty(&event.attendees),
                });
                let result = to_json(&event);
                (
                    "calendar.event.created",
                    data,
                    result.clone(),
                    result,
                    Some(event),
                )
            }
            Change::Update { event_id, patch } => {
                let old = self.event(&event_id)?.clone();
                let (event, changes) = patched(&old, patch)?;
                if changes.is_empty() {
                    return Err(ServiceError::Unchanged);
                }
                self.check_slot(&event)?;
                let data = serde_json::to_value(EventUpdated {
                    calendar_id: calendar_id.as_str().into(),
                    event_id: event.event_id.clone(),
                    title: event.title.clone(),
                    starts_at: event.starts_at,
                    ends_at: event.ends_at,
                    all_day: event.all_day.then_some(true),
                    location: event.location.clone(),
                    attendees: non_empty(&event.attendees),
                    changes,
                });
                let result = to_json(&event);
                (
                    "calendar.event.updated",
                    data,
                    result.clone(),
                    result,
                    Some(event),
                )
            }
            Change::Delete { event_id } => {
                // Its attendees hear of it too.
                let old = to_json(self.event(&event_id)?);
                let data = serde_json::to_value(EventDeleted {
                    calendar_id: calendar_id.as_str().into(),
                    event_id: event_id.clone(),
                });
                let result = serde_json::json!({ "event_id": event_id, "deleted": true });
                ("calendar.event.deleted", data, result, old, None)
            }
            Change::Rsvp { event_id, response } => {
                let mut event = self.event(&event_id)?.clone();
                event.rsvps.insert(user.clone(), response);
                let result = to_json(&event);
                let data = serde_json::to_value(EventRsvp {
                    calendar_id: calendar_id.as_str().into(),
                    event_id,
                    user_id: user.clone(),
                    response,
                });
                (
                    "calendar.event.rsvp",
                    data,
                    result.clone(),
                    result,
                    Some(event),
                )
            }
        };
        let event_id = audience_of["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let applied = self.applied(user, event_type, data, (result, audience_of), envelope_id)?;
        match effect {
            Some(event) => self.events.insert(event_id, event),
            None => self.events.remove(&event_id),
        };
        Ok(applied)
    }

    /// The reply's result and the envelope of a change to `event`.
    ///
    /// # Errors
    /// `EVENT_TOO_LARGE` when Herald would refuse the envelope: it is
    /// checked before the change is written, because a written envelope that
    /// can never be published would stay in the calendar's outbox.
    fn applied(
        &self,
        user: &UserId,
        event_type: &str,
        data: serde_json::Result<serde_json::Value>,
        (result, event): (serde_json::Value, serde_json::Value),
        envelope_id: EventId,
    ) -> Result<Applied, ServiceError> {
        let envelope = Envelope {
            id: Some(envelope_id),
            event_type: event_type.into(),
            source: SOURCE.into(),
            time: Some(Timestamp::now()),
            audience: self.audience(user, &event),
            data: data.expect("calendar events serialize"),
        };
        let bytes = serde_json::to_vec(&envelope).map_or(usize::MAX, |b| b.len());
        let stored = bytes.saturating_mul(envelope.audience.users.len());
        if bytes > MAX_ENVELOPE_BYTES || stored > MAX_EVENT_STORED_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "the change makes a {bytes}-byte event for {} users; Herald takes at most \
                 {MAX_ENVELOPE_BYTES} bytes, and {MAX_EVENT_STORED_BYTES} bytes times recipients",
                envelope.audience.users.len()
            )));
        }
        Ok(Applied { result, envelope })
    }

    fn event(&self, event_id: &str) -> Result<&Event, ServiceError> {
        self.events.get(event_id).ok_or_else(|| {
            ServiceError::NotFound(format!("no event `{event_id}` in this calendar"))
        })
    }

    /// Two timed events at the same location may not overlap: the room is
    /// taken. All-day events and events without a location never clash.
    fn check_slot(&self, event: &Event) -> Result<(), ServiceError> {
        let Some(location) = event.location.as_deref().map(normalized) else {
            return Ok(());
        };
        if event.all_day {
            return Ok(());
        }
        let clash = self.events.values().find(|other| {
            other.event_id != event.event_id
                && !other.all_day
                && other.location.as_deref().map(normalized).as_deref() == Some(location.as_str())
                && other.starts_at < event.ends_at
                && other.ends_at > event.starts_at
        });
        match clash {
            Some(other) => Err(ServiceError::SlotTaken(format!(
                "{location} is taken by `{}` at that time",
                other.title
            ))),
            None => Ok(()),
        }
    }

    /// Who hears of a change: the caller, the members and the event's
    /// attendees, at most 1,000 users (in that order).
    fn audience(&self, user: &UserId, event: &serde_json::Value) -> Audience {
        let attendees = event["attendees"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().and_then(|a| UserId::parse(a).ok()));
        let mut seen = BTreeSet::new();
        let users = std::iter::once(user.clone())
            .chain(self.members.iter().cloned())
            .chain(attendees)
            .filter(|u| seen.insert(u.clone()))
            .take(1000)
            .collect();
        Audience {
            users,
            namespaces: Vec::new(),
        }
    }
}

/// `old` with `patch` applied, and the fields that changed.
fn patched(old: &Event, patch: Patch) -> Result<(Event, Vec<ChangedField>), ServiceError> {
    let mut event = old.clone();
    let mut changes = Vec::new();
    if let Some(title) = patch.title.filter(|t| *t != old.title) {
        event.title = title;
        changes.push(ChangedField::Title);
    }
    if let Some(starts_at) = patch.starts_at.filter(|t| *t != old.starts_at) {
        event.starts_at = starts_at;
        changes.push(ChangedField::StartsAt);
    }
    if let Some(ends_at) = patch.ends_at.filter(|t| *t != old.ends_at) {
        event.ends_at = ends_at;
        changes.push(ChangedField::EndsAt);
    }
    if let Some(all_day) = patch.all_day.filter(|a| *a != old.all_day) {
        event.all_day = all_day;
        changes.push(ChangedField::AllDay);
    }
    if let Some(location) = patch.location {
        let location = Some(location).filter(|l| !l.is_empty());
        if location != old.location {
            event.location = location;
            changes.push(ChangedField::Location);
        }
    }
    if let Some(attendees) = patch.attendees.filter(|a| *a != old.attendees) {
        event.attendees = attendees;
        changes.push(ChangedField::Attendees);
    }
    if event.ends_at <= event.starts_at {
        // The request was valid alone; with the stored fields it is not.
        let path = if changes.contains(&ChangedField::EndsAt) {
            "data.ends_at"
        } else {
            "data.starts_at"
        };
        return Err(ServiceError::validation(
            path,
            "must leave ends_at after starts_at",
        ));
    }
    Ok((event, changes))
}

fn normalized(location: &str) -> String {
    location.trim().to_lowercase()
}

fn non_empty(users: &[UserId]) -> Option<Vec<UserId>> {
    (!users.is_empty()).then(|| users.to_vec())
}

fn to_json(event: &Event) -> serde_json::Value {
    serde_json::to_value(event).expect("an event serializes")
}

#[cfg(test)]
mod tests;
