//! `GET /metrics` on both services, scraped over HTTP: the counters that
//! must move do, each service counting only what it did itself.

use herald_shared::{events::EventType, subject::domain_subject};
use herald_tests::{
    WAIT,
    apps::{Stack, TestEdge, TestPublisher},
    clients::{WsClient, calendar_event, post_event, service_token, user_token},
    metrics::{scrape, wait_for},
    nats::NatsServer,
    resume::{ResumingClient, Seqs},
    sse::SseClient,
    store::store_without_live_copy,
};
use serde_json::json;

const EVENTS: &str = "herald_publisher_events_total";

fn edge_url(edge: &TestEdge) -> String {
    format!("http://{}", edge.addr)
}

/// Publishes an event for `u1` and records its seq in `expected`.
async fn publish_for_u1(stack: &Stack, expected: &mut Seqs, id: &str) {
    let accepted = stack.publish(&calendar_event(id, &["u1"], &[])).await;
    expected
        .entry("user:u1".into())
        .or_default()
        .push(accepted.published[0].seq);
}

/// Reads until `client` has received every seq in `expected` (bounded).
async fn read_all(client: &mut ResumingClient, expected: &Seqs) {
    let want: usize = expected.values().map(Vec::len).sum();
    tokio::time::timeout(WAIT, async {
        while client.tally(expected).delivered < want {
            client.next().await.expect("the connection stays up");
        }
    })
    .await
    .expect("every event in time");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_publisher_counts_http_events_by_type_result_and_source() {
    let stack = Stack::start(0).await;
    let url = stack.publisher.url();
    let event = calendar_event("m1", &["u1"], &["team"]);
    stack.publish(&event).await;
    stack.publish(&event).await;
    let mut invalid = calendar_event("m2", &["u1"], &[]);
    invalid["data"]["ends_at"] = json!("2026-11-27T08:00:00Z");
    assert_eq!(
        post_event(&url, &service_token(), &invalid).await.status,
        422
    );
    assert_eq!(post_event(&url, "garbage", &event).await.status, 401);

    let scraped = scrape(&url).await;
    let updated = EventType::CalendarEventUpdated.as_str();
    for (result, event_type, n) in [
        ("accepted", updated, 1.0),
        ("duplicate", updated, 1.0),
        ("rejected", updated, 1.0),
        ("rejected", "unknown", 1.0),
    ] {
        let labels = [("type", event_type), ("result", result), ("source", "http")];
        assert_eq!(
            scraped.get(EVENTS, &labels),
            Some(n),
            "{labels:?} in:\n{}",
            scraped.text
        );
    }
    assert_eq!(scraped.sum(EVENTS, &[("result", "failed")]), 0.0);
    assert_eq!(
        scraped.get("herald_publisher_publish_latency_seconds_count", &[]),
        Some(2.0),
        "one observation per stored event, duplicates included"
    );
    assert_eq!(
        scraped.get("herald_publisher_nats_connected", &[]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_publisher_counts_domain_events_dead_letters_and_ingest_lag() {
    let nats = NatsServer::start();
    let publisher = TestPublisher::spawn(&nats).await;
    let js = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let subject = domain_subject(EventType::CalendarEventUpdated).to_string();
    let mut invalid = calendar_event("bad", &["u1"], &[]);
    invalid["data"]["title"] = json!("");
    for payload in [calendar_event("good", &["u1"], &[]), invalid] {
        js.publish(subject.clone(), payload.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let url = publisher.url();
    let labels = |result| [("source", "nats"), ("result", result)];
    wait_for(&url, EVENTS, &labels("rejected"), |n| n == 1.0).await;
    wait_for(&url, EVENTS, &labels("accepted"), |n| n == 1.0).await;
    let scraped = scrape(&url).await;
    assert_eq!(
        scraped.get(
            "herald_publisher_dead_lettered_total",
            &[("code", "VALIDATION_FAILED")]
        ),
        Some(1.0)
    );
    assert_eq!(
        scraped.sum(EVENTS, &[("type", "calendar.event.updated")]),
        2.0,
        "the refused one counts under the type it names"
    );
    assert_eq!(
        scraped.get("herald_publisher_ingest_lag_seconds_count", &[]),
        Some(2.0)
    );
    assert_eq!(scraped.sum(EVENTS, &[("source", "http")]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_counts_repaired_gaps_replays_and_truncated_histories() {
    let stack = Stack::start(1).await;
    let edge = edge_url(stack.edge());
    let ws = format!("ws://{}/v1/ws", stack.edge().addr);
    let mut expected = Seqs::new();
    let mut client = ResumingClient::new("u1", &[]);
    client.connect(&ws).await.unwrap();
    assert_eq!(
        scrape(&edge).await.get("herald_edge_nats_connected", &[]),
        Some(1.0)
    );

    // A lost live message, revealed by the next one's Nats-Last-Sequence.
    publish_for_u1(&stack, &mut expected, "e1").await;
    let lost = store_without_live_copy(&stack.nats, &calendar_event("lost", &["u1"], &[])).await;
    expected.get_mut("user:u1").unwrap().push(lost);
    publish_for_u1(&stack, &mut expected, "e3").await;
    read_all(&mut client, &expected).await;
    wait_for(&edge, "herald_edge_gaps_repaired_total", &[], |n| n >= 1.0).await;
    wait_for(&edge, "herald_edge_repaired_events_total", &[], |n| {
        n >= 1.0
    })
    .await;

    // A resume on the user channel: one replay of the one missed event.
    client.disconnect();
    publish_for_u1(&stack, &mut expected, "missed").await;
    client.connect(&ws).await.unwrap();
    read_all(&mut client, &expected).await;
    wait_for(&edge, "herald_edge_replays_total", &[], |n| n == 1.0).await;
    let scraped = scrape(&edge).await;
    assert_eq!(
        scraped.get("herald_edge_replayed_events_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        scraped.get("herald_edge_history_truncated_total", &[]),
        Some(0.0)
    );

    // A cursor of another epoch.
    let url = stack.edge().ws_url(&format!(
        "token={}&since=1&epoch=another-epoch",
        user_token("u2", &[])
    ));
    let (_socket, _) = WsClient::connect_welcomed(&url).await;
    wait_for(&edge, "herald_edge_history_truncated_total", &[], |n| {
        n == 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_counts_refused_tokens_by_code() {
    let stack = Stack::start(1).await;
    let mut client = WsClient::connect(&stack.edge().ws_url("token=garbage")).await;
    let (_, closed) = client.until_closed().await;
    assert_eq!(closed.code, 4002);

    let edge = edge_url(stack.edge());
    let invalid = [("code", "INVALID_TOKEN")];
    wait_for(&edge, "herald_edge_auth_failures_total", &invalid, |n| {
        n == 1.0
    })
    .await;
    let scraped = scrape(&edge).await;
    assert_eq!(
        scraped.get(
            "herald_edge_auth_failures_total",
            &[("code", "MISSING_TOKEN")]
        ),
        Some(0.0)
    );
    assert_eq!(
        scraped.sum("herald_edge_connections_opened_total", &[]),
        0.0,
        "a refused socket is no connection"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_counts_connections_deliveries_and_their_latency() {
    let stack = Stack::start(1).await;
    let edge = edge_url(stack.edge());
    let websocket = [("transport", "websocket")];
    let url = stack
        .edge()
        .ws_url(&format!("token={}", user_token("u1", &[])));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;
    let scraped = scrape(&edge).await;
    assert_eq!(
        scraped.get("herald_edge_connections", &websocket),
        Some(1.0)
    );
    assert_eq!(
        scraped.get("herald_edge_connections_opened_total", &websocket),
        Some(1.0)
    );

    stack.publish(&calendar_event("e1", &["u1"], &[])).await;
    client.next_event().await;
    wait_for(&edge, "herald_edge_deliveries_total", &[], |n| n == 1.0).await;
    let latencies = "herald_edge_delivery_latency_seconds_count";
    assert_eq!(scrape(&edge).await.get(latencies, &[]), Some(1.0));

    client.close().await;
    wait_for(&edge, "herald_edge_connections", &websocket, |n| n == 0.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_counts_sse_connections_and_deliveries() {
    let stack = Stack::start(1).await;
    let edge = edge_url(stack.edge());
    let sse = [("transport", "sse")];
    let url = format!("{edge}/v1/sse?token={}", user_token("u1", &[]));
    let mut stream = SseClient::connect(&url, None).await;
    stream.next_event().await; // welcome
    assert_eq!(
        scrape(&edge).await.get("herald_edge_connections", &sse),
        Some(1.0)
    );

    stack.publish(&calendar_event("e1", &["u1"], &[])).await;
    stream.next_event().await;
    wait_for(&edge, "herald_edge_deliveries_total", &[], |n| n == 1.0).await;
    let latencies = "herald_edge_delivery_latency_seconds_count";
    assert_eq!(scrape(&edge).await.get(latencies, &[]), Some(1.0));

    drop(stream);
    wait_for(&edge, "herald_edge_connections", &sse, |n| n == 0.0).await;
    let refused = format!("{edge}/v1/sse?token=garbage");
    SseClient::connect(&refused, None).await.next_event().await;
    let invalid = [("code", "INVALID_TOKEN")];
    wait_for(&edge, "herald_edge_auth_failures_total", &invalid, |n| {
        n == 1.0
    })
    .await;
}
