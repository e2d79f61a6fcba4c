use herald_shared::{envelope::Envelope, events::EventType, ids::EventId};
use time::macros::datetime;

use super::*;

fn at(hour: u8) -> Timestamp {
    Timestamp(datetime!(2026-12-08 00:00 UTC).replace_hour(hour).unwrap())
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn cal() -> CalendarId {
    CalendarId::parse("team.*>").unwrap()
}

fn new_event(title: &str, from: u8, to: u8, location: Option<&str>) -> Change {
    Change::Create(NewEvent {
        title: title.into(),
        starts_at: at(from),
        ends_at: at(to),
        all_day: None,
        location: location.map(Into::into),
        attendees: Some(vec![user("guest")]),
    })
}

fn create(calendar: &mut Calendar, id: &str, change: Change) -> Result<Applied, ServiceError> {
    calendar.apply(&cal(), &user("alice"), change, id, EventId::generate())
}

/// The envelope must pass the publisher's own rules, or it would be
/// dead-lettered instead of delivered.
fn assert_publishable(envelope: &Envelope) -> EventType {
    let bytes = serde_json::to_vec(envelope).unwrap();
    let valid = herald_shared::envelope::parse_event(&bytes).expect("a valid envelope");
    assert_eq!(valid.id, envelope.id.clone().unwrap());
    valid.event_type
}

#[test]
fn a_created_event_is_listed_and_published_to_members_and_attendees() {
    let mut calendar = Calendar::default();
    calendar.join(&user("alice")).unwrap();
    let applied = create(&mut calendar, "evt_1", new_event("Standup", 9, 10, None)).unwrap();
    assert_eq!(applied.result["event_id"], "evt_1");
    assert_eq!(
        assert_publishable(&applied.envelope),
        EventType::CalendarEventCreated
    );
    assert_eq!(
        applied.envelope.audience.users,
        [user("alice"), user("guest")]
    );
    assert_eq!(applied.envelope.data["calendar_id"], "team.*>");
    assert_eq!(calendar.list(at(0), at(23)).len(), 1);
    assert!(
        calendar.list(at(10), at(11)).is_empty(),
        "ends at 10: not in [10, 11)"
    );
}

#[test]
fn a_room_cannot_be_booked_twice_at_once() {
    let mut calendar = Calendar::default();
    create(&mut calendar, "a", new_event("A", 9, 11, Some("Room 1"))).unwrap();
    let err = create(&mut calendar, "b", new_event("B", 10, 12, Some(" room 1 "))).unwrap_err();
    assert_eq!(err.code(), "SLOT_TAKEN");
    // Elsewhere, or right after, is fine.
    create(&mut calendar, "c", new_event("C", 10, 12, Some("Room 2"))).unwrap();
    create(&mut calendar, "d", new_event("D", 11, 12, Some("Room 1"))).unwrap();
    // Moving into the taken slot is refused too.
    let patch = Patch {
        starts_at: Some(at(8)),
        ..Default::default()
    };
    let change = Change::Update {
        event_id: "d".into(),
        patch,
    };
    assert_eq!(
        create(&mut calendar, "-", change).unwrap_err().code(),
        "SLOT_TAKEN"
    );
}

#[test]
fn an_update_names_what_changed_and_keeps_the_event_valid() {
    let mut calendar = Calendar::default();
    create(&mut calendar, "a", new_event("A", 9, 10, None)).unwrap();
    let update = |patch| Change::Update {
        event_id: "a".into(),
        patch,
    };
    let renamed = create(
        &mut calendar,
        "-",
        update(Patch {
            title: Some("B".into()),
            starts_at: Some(at(9)),
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(
        renamed.envelope.data["changes"],
        serde_json::json!(["title"])
    );
    assert_publishable(&renamed.envelope);
    let same = update(Patch {
        title: Some("B".into()),
        ..Default::default()
    });
    assert_eq!(
        create(&mut calendar, "-", same).unwrap_err().code(),
        "UNCHANGED"
    );
    let backwards = update(Patch {
        ends_at: Some(at(8)),
        ..Default::default()
    });
    let err = create(&mut calendar, "-", backwards).unwrap_err();
    assert_eq!(err.code(), "VALIDATION_FAILED");
    assert_eq!(err.errors()[0].path, "data.ends_at");
}

#[test]
fn delete_and_rsvp_need_the_event() {
    let mut calendar = Calendar::default();
    create(&mut calendar, "a", new_event("A", 9, 10, None)).unwrap();
    let rsvp = Change::Rsvp {
        event_id: "a".into(),
        response: RsvpResponse::Tentative,
    };
    let answered = create(&mut calendar, "-", rsvp.clone()).unwrap();
    assert_eq!(answered.result["rsvps"]["alice"], "tentative");
    assert_eq!(answered.envelope.data["user_id"], "alice");
    assert_publishable(&answered.envelope);
    let deleted = create(
        &mut calendar,
        "-",
        Change::Delete {
            event_id: "a".into(),
        },
    )
    .unwrap();
    assert_publishable(&deleted.envelope);
    assert_eq!(
        create(&mut calendar, "-", rsvp).unwrap_err().code(),
        "NOT_FOUND"
    );
    let again = Change::Delete {
        event_id: "a".into(),
    };
    assert_eq!(
        create(&mut calendar, "-", again).unwrap_err().code(),
        "NOT_FOUND"
    );
}

#[test]
fn a_calendar_is_bounded_in_events_and_members() {
    let mut calendar = Calendar::default();
    for i in 0..MAX_EVENTS {
        create(&mut calendar, &format!("e{i}"), new_event("x", 9, 10, None)).unwrap();
    }
    let err = create(&mut calendar, "over", new_event("x", 9, 10, None)).unwrap_err();
    assert_eq!(err.code(), "CALENDAR_FULL");
    let mut calendar = Calendar::default();
    for i in 0..MAX_MEMBERS {
        assert!(calendar.join(&user(&format!("u{i}"))).unwrap());
    }
    assert!(!calendar.join(&user("u0")).unwrap());
    assert_eq!(
        calendar.join(&user("late")).unwrap_err().code(),
        "CALENDAR_FULL"
    );
}

#[test]
fn calendar_ids_follow_the_event_rule() {
    assert!(CalendarId::parse("").is_err());
    assert!(CalendarId::parse("a\u{7}").is_err());
    assert!(CalendarId::parse("é".repeat(128)).is_ok());
    assert!(CalendarId::parse("é".repeat(129)).is_err());
}

#[test]
fn an_event_herald_would_refuse_is_refused_before_it_is_written() {
    let mut calendar = Calendar::default();
    // 1,000 attendees with 100-byte ids: a 100 KiB envelope, over Herald's 64 KiB.
    let attendees = (0..1000).map(|i| user(&format!("{i:0>100}"))).collect();
    let change = Change::Create(NewEvent {
        title: "All hands".into(),
        starts_at: at(9),
        ends_at: at(10),
        all_day: None,
        location: None,
        attendees: Some(attendees),
    });
    let err = create(&mut calendar, "big", change).unwrap_err();
    assert_eq!(err.code(), "EVENT_TOO_LARGE");
    assert!(calendar.events.is_empty(), "nothing changed");
}
