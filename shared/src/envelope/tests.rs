use serde_json::json;

use super::*;

fn updated() -> serde_json::Value {
    json!({
        "id": "cal-svc-7f3a",
        "type": "calendar.event.updated",
        "source": "calendar-service",
        "time": "2026-11-26T10:00:00Z",
        "audience": { "users": ["u_1", "alice@example.com", "u_1"], "namespaces": ["team-42"] },
        "data": { "calendar_id": "cal_1", "event_id": "evt_9", "title": "Standup",
                  "starts_at": "2026-11-27T09:00:00Z", "ends_at": "2026-11-27T09:15:00Z",
                  "changes": ["starts_at"] }
    })
}

fn parse(value: &serde_json::Value) -> Result<ValidEvent, ErrorBody> {
    parse_event(&serde_json::to_vec(value).unwrap()).map_err(ErrorBody::from)
}

fn paths(body: &ErrorBody) -> Vec<&str> {
    body.errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn the_spec_example_is_valid_and_maps_to_one_channel_per_recipient() {
    let event = parse(&updated()).unwrap();
    assert_eq!(event.id.as_str(), "cal-svc-7f3a");
    assert_eq!(event.event_type, EventType::CalendarEventUpdated);
    let channels: Vec<String> = event.channels.iter().map(ToString::to_string).collect();
    assert_eq!(
        channels,
        ["user:u_1", "user:alice@example.com", "ns:team-42"]
    );
}

#[test]
fn malformed_json_reports_line_and_column() {
    let err = parse_event(b"{\n  \"type\": ,\n}").unwrap_err().body;
    assert_eq!(err.code, ErrorCode::MalformedJson);
    assert_eq!((err.line, err.column), (Some(2), Some(11)));
}

#[test]
fn unknown_types_and_unknown_fields_are_refused() {
    let mut value = updated();
    value["type"] = json!("calendar.event.exploded");
    assert_eq!(parse(&value).unwrap_err().code, ErrorCode::UnknownEventType);

    let mut value = updated();
    value["data"]["colour"] = json!("red");
    let err = parse(&value).unwrap_err();
    assert_eq!(err.code, ErrorCode::ValidationFailed);
    assert_eq!(paths(&err), ["data.colour"], "{err:?}");
}

#[test]
fn every_broken_rule_is_listed_with_its_path() {
    let mut value = updated();
    value["source"] = json!("");
    value["data"]["ends_at"] = json!("2026-11-27T08:00:00Z");
    value["data"]["title"] = json!("x".repeat(201));
    value["data"]["changes"] = json!([]);
    let err = parse(&value).unwrap_err();
    assert_eq!(err.code, ErrorCode::ValidationFailed);
    let mut got = paths(&err);
    got.sort_unstable();
    assert_eq!(
        got,
        ["data.changes", "data.ends_at", "data.title", "source"],
        "{err:?}"
    );
}

#[test]
fn audience_needs_a_recipient_and_valid_ids() {
    let mut value = updated();
    value["audience"] = json!({ "users": [], "namespaces": [] });
    assert_eq!(paths(&parse(&value).unwrap_err()), ["audience"]);

    let mut value = updated();
    value["audience"]["users"][1] = json!("bad\u{7}");
    assert_eq!(paths(&parse(&value).unwrap_err()), ["audience.users[1]"]);

    let mut value = updated();
    value["audience"]["users"] = json!((0..1001).map(|i| format!("u{i}")).collect::<Vec<_>>());
    assert_eq!(paths(&parse(&value).unwrap_err()), ["audience.users"]);
}

#[test]
fn missing_id_and_time_get_defaults() {
    let mut value = updated();
    value.as_object_mut().unwrap().remove("id");
    value.as_object_mut().unwrap().remove("time");
    let event = parse(&value).unwrap();
    assert!(uuid::Uuid::parse_str(event.id.as_str()).is_ok());
}

#[test]
fn nats_ingest_supplies_its_own_defaults_and_only_when_absent() {
    let stored_at = time::macros::datetime!(2026-11-26 09:59:58 UTC);
    let defaults = |value: &serde_json::Value| {
        parse_event_with_defaults(
            &serde_json::to_vec(value).unwrap(),
            || EventId::for_domain_message(7, stored_at),
            || Timestamp(stored_at),
        )
        .unwrap()
    };
    let mut value = updated();
    value.as_object_mut().unwrap().remove("id");
    value.as_object_mut().unwrap().remove("time");
    let event = defaults(&value);
    assert_eq!(event.id, EventId::for_domain_message(7, stored_at));
    assert_eq!(event.time, Timestamp(stored_at));

    let given = defaults(&updated());
    assert_eq!(given.id.as_str(), "cal-svc-7f3a");
    assert_eq!(
        serde_json::to_value(given.time).unwrap(),
        "2026-11-26T10:00:00Z"
    );
}

#[test]
fn created_refuses_changes_and_rsvp_checks_the_response() {
    let mut value = updated();
    value["type"] = json!("calendar.event.created");
    assert_eq!(paths(&parse(&value).unwrap_err()), ["data.changes"]);

    let mut value = updated();
    value["type"] = json!("calendar.event.rsvp");
    value["data"] =
        json!({ "calendar_id": "c", "event_id": "e", "user_id": "u", "response": "maybe" });
    assert_eq!(paths(&parse(&value).unwrap_err()), ["data.response"]);
}

#[test]
fn the_stored_notification_carries_no_audience() {
    let event = parse(&updated()).unwrap();
    let stored = serde_json::to_value(event.notification()).unwrap();
    assert_eq!(stored["event_type"], "calendar.event.updated");
    assert_eq!(stored["time"], "2026-11-26T10:00:00Z");
    assert_eq!(stored["data"]["changes"], json!(["starts_at"]));
    assert!(stored.get("audience").is_none());
}

#[test]
fn duplicate_keys_anywhere_are_malformed_json() {
    let body = updated().to_string();
    let bodies = [
        // Two `type`s: serde_json alone keeps the last one.
        body.replacen(
            r#""type":"calendar.event.updated""#,
            r#""type":"calendar.event.deleted","type":"calendar.event.updated""#,
            1,
        ),
        // The same key spelled with an escape is the same key.
        body.replacen(r#""source":"#, r#""sourc\u0065":"x","source":"#, 1),
        body.replacen(r#""users":"#, r#""users":[],"users":"#, 1),
        body.replacen(r#""title":"#, r#""title":"a","title":"#, 1),
    ];
    for duplicated in bodies {
        assert_ne!(duplicated, body);
        let err = parse_event(duplicated.as_bytes()).unwrap_err().body;
        assert_eq!(err.code, ErrorCode::MalformedJson, "{duplicated}");
        assert!(err.message.contains("duplicate key"), "{err:?}");
        assert!(err.line.is_some() && err.column.is_some(), "{err:?}");
    }
    // Equal keys in different objects are fine.
    assert!(parse_event(body.as_bytes()).is_ok());
}

#[test]
fn control_characters_in_envelope_strings_are_refused_with_their_path() {
    let cases = [
        ("source", json!("calendar\u{0}service")),
        ("source", json!("calendar\u{7f}")),
        ("source", json!("calendar\u{85}")),
        ("type", json!("calendar.event.updated\u{1b}")),
        ("id", json!("cal\nsvc")),
    ];
    for (field, bad) in cases {
        let mut value = updated();
        value[field] = bad.clone();
        let err = parse(&value).unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationFailed, "{field}: {bad}");
        assert_eq!(paths(&err), [field], "{err:?}");
    }
    let mut value = updated();
    value["audience"]["namespaces"][0] = json!("team\u{9}42");
    assert_eq!(
        paths(&parse(&value).unwrap_err()),
        ["audience.namespaces[0]"]
    );
}

#[test]
fn leap_seconds_are_refused_wherever_a_time_is_taken() {
    let mut value = updated();
    value["time"] = json!("2016-12-31T23:59:60Z");
    let err = parse(&value).unwrap_err();
    assert_eq!(err.code, ErrorCode::ValidationFailed);
    assert_eq!(paths(&err), ["time"], "{err:?}");
    assert!(err.errors[0].message.contains("leap second"), "{err:?}");

    let mut value = updated();
    value["data"]["ends_at"] = json!("2016-12-31T23:59:60+00:00");
    assert_eq!(paths(&parse(&value).unwrap_err()), ["data.ends_at"]);

    // The second before and the one after are ordinary times.
    for ok in [
        "2016-12-31T23:59:59Z",
        "2017-01-01T00:00:00Z",
        "2016-12-31T23:59:59.999Z",
    ] {
        let mut value = updated();
        value["time"] = json!(ok);
        assert!(parse(&value).is_ok(), "{ok}");
    }
}

#[test]
fn control_characters_in_data_strings_are_refused_with_their_path() {
    for (field, bad) in [
        ("title", "Stand\u{0}up"),
        ("calendar_id", "cal\u{1b}1"),
        ("location", "Room\n4"),
    ] {
        let mut value = updated();
        value["data"][field] = json!(bad);
        let err = parse(&value).unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationFailed, "{field}");
        assert_eq!(paths(&err), [format!("data.{field}")], "{err:?}");
    }
    let mut value = updated();
    value["data"]["location"] = json!("x".repeat(201));
    assert_eq!(paths(&parse(&value).unwrap_err()), ["data.location"]);
    value["data"]["location"] = json!("Room 4, second floor");
    assert!(parse(&value).is_ok());
}

#[test]
fn a_refusal_names_the_registered_type_the_body_claimed_if_any() {
    let mut value = updated();
    value["data"]["title"] = json!("Stand\u{0}up");
    let refused = parse_event(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert_eq!(refused.claimed_type, Some(EventType::CalendarEventUpdated));
    // Unregistered, unreadable or absent: no type, so the metric label stays bounded.
    for payload in [&br#"{"type": "evil.{}\"type"}"#[..], b"not json", b"{}"] {
        let refused = parse_event(payload).unwrap_err();
        assert_eq!(refused.claimed_type, None, "{refused:?}");
    }
}
