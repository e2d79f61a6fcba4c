//! The registry of event types: wire name → `data` type with its garde rules.
//!
//! Adding a type is one line in the `wire_registry!` invocation below plus its
//! data struct; parsing, validation, schemas and the domain subject follow.

pub mod calendar;

use serde::Deserialize;

use crate::registry::{validate_data, wire_registry};

wire_registry! {
    /// A registered event type.
    kind EventType;
    /// The validated `data` of an event, one variant per registered type.
    #[derive(Deserialize)]
    data EventData;
    parse validate_data;

    /// A calendar event was created.
    CalendarEventCreated => "calendar.event.created", calendar::EventCreated;
    /// A calendar event changed; `changes` names the fields.
    CalendarEventUpdated => "calendar.event.updated", calendar::EventUpdated;
    /// A calendar event was deleted.
    CalendarEventDeleted => "calendar.event.deleted", calendar::EventDeleted;
    /// An attendee answered an invitation.
    CalendarEventRsvp => "calendar.event.rsvp", calendar::EventRsvp;
}
