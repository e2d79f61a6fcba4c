use serde_json::{Value, json};

use super::*;

fn paths(method: RpcMethod, data: Value) -> Vec<String> {
    method
        .parse_data(data)
        .unwrap_err()
        .into_iter()
        .map(|e| e.path)
        .collect()
}

#[test]
fn names_round_trip_and_unknown_names_are_none() {
    for &method in RpcMethod::ALL {
        assert_eq!(RpcMethod::parse(method.as_str()), Some(method));
    }
    assert_eq!(RpcMethod::parse("calendar.event.*"), None);
    assert_eq!(RpcMethod::parse("calendar.event.created"), None);
}

#[test]
fn create_takes_the_event_rules_with_every_failed_path() {
    let good = json!({ "calendar_id": "c", "title": "Standup",
        "starts_at": "2026-12-07T09:00:00Z", "ends_at": "2026-12-07T09:15:00Z" });
    let request = RpcMethod::CalendarEventCreate
        .parse_data(good.clone())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&request.to_body()).unwrap(),
        good
    );
    assert_eq!(
        paths(
            RpcMethod::CalendarEventCreate,
            json!({ "calendar_id": "", "title": "x".repeat(201),
                "starts_at": "2026-12-07T09:00:00Z", "ends_at": "2026-12-07T09:00:00Z" })
        ),
        ["data.calendar_id", "data.ends_at", "data.title"]
    );
    assert_eq!(
        paths(
            RpcMethod::CalendarEventCreate,
            json!({ "calendar_id": "c", "title": "t", "user": "mallory",
                "starts_at": "2026-12-07T09:00:00Z", "ends_at": "2026-12-07T10:00:00Z" })
        ),
        ["data.user"],
        "unknown fields are refused"
    );
}

#[test]
fn update_needs_one_change_and_ordered_times() {
    let base = || json!({ "calendar_id": "c", "event_id": "e" });
    assert_eq!(paths(RpcMethod::CalendarEventUpdate, base()), ["data"]);
    let mut rename = base();
    rename["title"] = json!("Retro");
    assert!(RpcMethod::CalendarEventUpdate.parse_data(rename).is_ok());
    let mut reversed = base();
    reversed["starts_at"] = json!("2026-12-07T10:00:00Z");
    reversed["ends_at"] = json!("2026-12-07T09:00:00Z");
    assert_eq!(
        paths(RpcMethod::CalendarEventUpdate, reversed),
        ["data.ends_at"]
    );
    let mut only_end = base();
    only_end["ends_at"] = json!("2026-12-07T09:00:00Z");
    assert!(RpcMethod::CalendarEventUpdate.parse_data(only_end).is_ok());
}

#[test]
fn rsvp_takes_no_user_and_a_known_response() {
    let good = json!({ "calendar_id": "c", "event_id": "e", "response": "tentative" });
    assert!(RpcMethod::CalendarEventRsvp.parse_data(good).is_ok());
    assert_eq!(
        paths(
            RpcMethod::CalendarEventRsvp,
            json!({ "calendar_id": "c", "event_id": "e", "response": "maybe" })
        ),
        ["data.response"]
    );
    assert_eq!(
        paths(
            RpcMethod::CalendarEventRsvp,
            json!({ "calendar_id": "c", "event_id": "e", "response": "accepted", "user_id": "bob" })
        ),
        ["data.user_id"],
        "the caller answers only for themself"
    );
}

#[test]
fn list_windows_are_ordered_and_at_most_92_days() {
    let list = |from: &str, to: &str| {
        RpcMethod::CalendarEventList
            .parse_data(json!({ "calendar_id": "c", "from": from, "to": to }))
    };
    assert!(list("2026-12-01T00:00:00Z", "2027-03-03T00:00:00Z").is_ok());
    assert!(list("2026-12-01T00:00:00Z", "2027-03-03T00:00:01Z").is_err());
    assert!(list("2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z").is_err());
    assert!(list("2026-12-01T00:00:00Z", "not a time").is_err());
}

#[test]
fn replies_are_exactly_one_of_two_shapes() {
    assert_eq!(
        RpcReply::parse(br#"{"result":null}"#).unwrap(),
        RpcReply::Result(Value::Null)
    );
    let error = RpcReply::parse(
        br#"{"error":{"code":"SLOT_TAKEN","message":"m","errors":[{"path":"data.x","message":"y"}]}}"#,
    )
    .unwrap();
    assert!(matches!(error, RpcReply::Error(e) if e.code == "SLOT_TAKEN" && e.errors.len() == 1));
    for bad in [
        &br#"{}"#[..],
        br#"{"result":1,"error":{"code":"A","message":"m"}}"#,
        br#"{"result":1,"extra":2}"#,
        br#"{"error":{"code":"slot_taken","message":"m"}}"#,
        br#"{"error":{"code":"<b>","message":"m"}}"#,
        br#"{"error":{"code":"A","message":"m","stack":"..."}}"#,
        br#"{"error":{"message":"m"}}"#,
        br#"[1]"#,
        b"not json",
    ] {
        assert!(
            RpcReply::parse(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = format!(
        r#"{{"error":{{"code":"{}","message":"m"}}}}"#,
        "A".repeat(65)
    );
    assert!(RpcReply::parse(long.as_bytes()).is_err());
    let longest = format!(
        r#"{{"error":{{"code":"{}","message":"m"}}}}"#,
        "A".repeat(64)
    );
    assert!(RpcReply::parse(longest.as_bytes()).is_ok());
}

#[test]
fn rpc_grants_match_exact_names_and_prefixes() {
    let claims = |rpc: &[&str]| UserClaims {
        sub: "a".into(),
        exp: 0,
        iat: None,
        ns: Vec::new(),
        rpc: rpc.iter().map(|s| s.to_string()).collect(),
    };
    let rsvp = RpcMethod::CalendarEventRsvp;
    assert!(claims(&["calendar.event.rsvp"]).allows_method(rsvp));
    assert!(claims(&["calendar.*"]).allows_method(rsvp));
    assert!(claims(&["*"]).allows_method(rsvp));
    assert!(!claims(&[]).allows_method(rsvp));
    assert!(!claims(&["calendar.event.list"]).allows_method(rsvp));
    assert!(!claims(&["calendar.event.rsvp.x"]).allows_method(rsvp));
}

#[test]
fn rpc_grants_are_bounded_like_namespace_grants() {
    let claims = UserClaims {
        sub: "a".into(),
        exp: 0,
        iat: None,
        ns: Vec::new(),
        rpc: vec!["calendar.*".to_string(); 3],
    };
    assert!(claims.check_grants(3).is_ok());
    assert!(claims.check_grants(2).is_err());
}
