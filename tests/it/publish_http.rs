//! `POST /v1/events`: the 202 body, idempotency, and every error code.

use herald_shared::error_code::ErrorBody;
use herald_tests::{
    apps::Stack,
    clients::{calendar_event, now, post_event, post_raw, service_claims, service_token, sign},
};
use serde_json::json;

fn seqs(accepted: &herald_shared::api::PublishAccepted) -> Vec<u64> {
    accepted.published.iter().map(|p| p.seq).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_is_stored_once_per_recipient_channel_and_answered_with_each_seq() {
    let stack = Stack::start(0).await;

    let accepted = stack
        .publish(&calendar_event(
            "e1",
            &["u_1", "alice@example.com", "u_1"],
            &["team-42"],
        ))
        .await;

    assert_eq!(accepted.id.as_str(), "e1");
    assert!(!accepted.duplicate);
    let channels: Vec<String> = accepted
        .published
        .iter()
        .map(|p| p.channel.to_string())
        .collect();
    assert_eq!(
        channels,
        ["user:u_1", "user:alice@example.com", "ns:team-42"]
    );
    assert_eq!(seqs(&accepted), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_id_stores_nothing_and_answers_the_original_seqs() {
    let stack = Stack::start(0).await;
    let event = calendar_event("same-id", &["u_1", "u_2"], &[]);

    let first = stack.publish(&event).await;
    let second = stack.publish(&event).await;
    let next = stack
        .publish(&calendar_event("other-id", &["u_1"], &[]))
        .await;

    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(seqs(&second), seqs(&first));
    assert_eq!(seqs(&next), [3], "the repeat stored nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_user_audience_is_stored_in_one_request() {
    let stack = Stack::start(0).await;
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();

    let accepted = stack.publish(&calendar_event("big", &users, &[])).await;

    // Acks are awaited concurrently, so channels need not be stored in audience
    // order; each is stored exactly once, and reported in audience order.
    let channels: Vec<String> = accepted
        .published
        .iter()
        .map(|p| p.channel.to_string())
        .collect();
    assert_eq!(
        channels,
        users
            .iter()
            .map(|u| format!("user:{u}"))
            .collect::<Vec<_>>()
    );
    let mut stored = seqs(&accepted);
    stored.sort_unstable();
    assert_eq!(
        stored,
        (1..=1000).collect::<Vec<u64>>(),
        "lost or duplicated notifications"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_has_its_status_and_code_and_stores_nothing() {
    let stack = Stack::start(0).await;
    let url = stack.publisher.url();
    let valid = calendar_event("e1", &["u_1"], &[]).to_string().into_bytes();
    let json = "application/json";
    let token = service_token();

    let mut expired = service_claims();
    expired["exp"] = json!(now() - 10);
    let mut wrong_audience = service_claims();
    wrong_audience["aud"] = json!("herald");
    let mut no_scope = service_claims();
    no_scope["scope"] = json!("events:read");
    let mut bad_dates = calendar_event("e1", &["u_1"], &[]);
    bad_dates["data"]["ends_at"] = json!("2026-11-27T08:00:00Z");
    let mut unknown_type = calendar_event("e1", &["u_1"], &[]);
    unknown_type["type"] = json!("calendar.event.exploded");
    let mut too_large = calendar_event("e1", &["u_1"], &[]);
    too_large["data"]["title"] = json!("x".repeat(65 * 1024));

    // (case, token, content type, body, status, code)
    type Case<'a> = (&'a str, Option<String>, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("no token", None, json, valid.clone(), 401, "MISSING_TOKEN"),
        (
            "garbage token",
            Some("not-a-jwt".into()),
            json,
            valid.clone(),
            401,
            "INVALID_TOKEN",
        ),
        (
            "wrong key",
            Some(sign(&service_claims(), "other-secret")),
            json,
            valid.clone(),
            401,
            "INVALID_TOKEN",
        ),
        (
            "wrong audience",
            Some(sign(&wrong_audience, herald_tests::clients::TEST_SECRET)),
            json,
            valid.clone(),
            401,
            "INVALID_TOKEN",
        ),
        (
            "expired",
            Some(sign(&expired, herald_tests::clients::TEST_SECRET)),
            json,
            valid.clone(),
            401,
            "EXPIRED_TOKEN",
        ),
        (
            "no scope",
            Some(sign(&no_scope, herald_tests::clients::TEST_SECRET)),
            json,
            valid.clone(),
            403,
            "FORBIDDEN",
        ),
        (
            "text body",
            Some(token.clone()),
            "text/plain",
            valid.clone(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "over 64 KiB",
            Some(token.clone()),
            json,
            too_large.to_string().into_bytes(),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "not JSON",
            Some(token.clone()),
            json,
            b"{\"id\": }".to_vec(),
            400,
            "MALFORMED_JSON",
        ),
        (
            "ends before it starts",
            Some(token.clone()),
            json,
            bad_dates.to_string().into_bytes(),
            422,
            "VALIDATION_FAILED",
        ),
        (
            "unknown type",
            Some(token.clone()),
            json,
            unknown_type.to_string().into_bytes(),
            422,
            "UNKNOWN_EVENT_TYPE",
        ),
    ];
    for (case, token, content_type, body, status, code) in cases {
        let answer = post_raw(&url, token.as_deref(), content_type, body).await;
        assert_eq!(answer.status, status, "{case}: {:?}", answer.body);
        let error: ErrorBody = serde_json::from_value(answer.body.clone())
            .unwrap_or_else(|e| panic!("{case}: not an error body ({e}): {:?}", answer.body));
        assert_eq!(error.code.as_str(), code, "{case}");
        assert!(!error.message.is_empty(), "{case}");
        match code {
            "MALFORMED_JSON" => {
                assert_eq!((error.line, error.column), (Some(1), Some(8)), "{case}")
            }
            "VALIDATION_FAILED" => {
                assert_eq!(error.errors.len(), 1, "{case}: {error:?}");
                assert_eq!(error.errors[0].path, "data.ends_at", "{case}");
            }
            _ => assert!(error.errors.is_empty(), "{case}"),
        }
    }

    let accepted = stack.publish(&calendar_event("after", &["u_1"], &[])).await;
    assert_eq!(seqs(&accepted), [1], "no refused event was stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_down_is_503_nats_unavailable_with_retry_after() {
    let Stack {
        publisher, nats, ..
    } = Stack::start(0).await;
    drop(nats);

    let answer = post_event(
        &publisher.url(),
        &service_token(),
        &calendar_event("e1", &["u_1"], &[]),
    )
    .await;

    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert_eq!(answer.body["code"], "NATS_UNAVAILABLE");
    assert_eq!(
        answer
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_keys_control_characters_and_leap_seconds_are_refused_and_store_nothing() {
    let stack = Stack::start(0).await;
    let url = stack.publisher.url();
    // Two `type`s: serde_json alone would keep the last.
    let two_types = r#"{"id":"e1","type":"calendar.event.deleted","type":"calendar.event.rsvp",
        "source":"s","audience":{"users":["u_1"]},"data":{"calendar_id":"c","event_id":"e"}}"#;
    let mut nul_source = calendar_event("e1", &["u_1"], &[]);
    nul_source["source"] = json!("calendar\u{0}service");
    let mut leap_second = calendar_event("e1", &["u_1"], &[]);
    leap_second["time"] = json!("2016-12-31T23:59:60Z");

    let answer = post_raw(
        &url,
        Some(&service_token()),
        "application/json",
        two_types.into(),
    )
    .await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    let error: ErrorBody = serde_json::from_value(answer.body).unwrap();
    assert_eq!(error.code.as_str(), "MALFORMED_JSON");
    assert!(error.message.contains("duplicate"), "{error:?}");
    assert_eq!(error.line, Some(1), "{error:?}");

    for (body, path) in [(nul_source, "source"), (leap_second, "time")] {
        let answer = post_event(&url, &service_token(), &body).await;
        assert_eq!(answer.status, 422, "{path}: {:?}", answer.body);
        let error: ErrorBody = serde_json::from_value(answer.body).unwrap();
        assert_eq!(error.code.as_str(), "VALIDATION_FAILED", "{path}");
        let paths: Vec<&str> = error.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, [path], "{error:?}");
    }

    let accepted = stack.publish(&calendar_event("after", &["u_1"], &[])).await;
    assert_eq!(seqs(&accepted), [1], "no refused event was stored");
}

/// With `--jwt-issuer` set, a service token without any `iss` is refused.
#[tokio::test(flavor = "multi_thread")]
async fn with_an_issuer_configured_a_service_token_without_iss_is_refused() {
    const ISSUER: &str = "https://issuer.example";
    let nats = herald_tests::nats::NatsServer::start();
    let mut config = herald_tests::apps::publisher_config(&nats);
    config.expect.issuer = Some(ISSUER.into());
    let publisher = herald_tests::apps::TestPublisher::spawn_with(config).await;
    let event = calendar_event("e1", &["u_1"], &[]);
    let mut with_iss = service_claims();
    with_iss["iss"] = json!(ISSUER);

    let without = post_event(&publisher.url(), &service_token(), &event).await;
    let with = post_event(
        &publisher.url(),
        &sign(&with_iss, herald_tests::clients::TEST_SECRET),
        &event,
    )
    .await;

    assert_eq!(without.status, 401, "{:?}", without.body);
    assert_eq!(without.body["code"], "INVALID_TOKEN");
    assert_eq!(with.status, 202, "{:?}", with.body);
}
