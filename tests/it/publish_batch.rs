//! `POST /v1/events/batch`: one result per event, in order; each event
//! validated, deduplicated and stored on its own; refusals of the whole batch.

use std::time::Duration;

use herald_shared::{
    api::{BatchOutcome, BatchResult, PublishAccepted, PublishBatchResults},
    error_code::ErrorBody,
    frames::ServerFrame,
};
use herald_tests::{
    WAIT,
    apps::Stack,
    clients::{Answer, WsClient, calendar_event, service_token},
    metrics::scrape,
};
use serde_json::json;

/// `POST /v1/events/batch` with the test service token and `body` as sent.
async fn post_batch(publisher_url: &str, body: impl Into<reqwest::Body>) -> Answer {
    let request = herald_tests::http_client(WAIT)
        .post(format!("{publisher_url}/v1/events/batch"))
        .header("content-type", "application/json")
        .bearer_auth(service_token())
        .body(body);
    let response = tokio::time::timeout(WAIT, request.send())
        .await
        .expect("publisher answers in time")
        .expect("post");
    Answer::read(response).await
}

/// `{"events": [<items joined>]}`, the items as raw JSON text.
fn batch_of(items: &[String]) -> Vec<u8> {
    format!(r#"{{"events":[{}]}}"#, items.join(",")).into_bytes()
}

/// The 200 body's results; panics on any other answer.
fn results(answer: Answer) -> Vec<BatchResult> {
    assert_eq!(answer.status, 200, "batch refused: {:?}", answer.body);
    let body: PublishBatchResults =
        serde_json::from_value(answer.body).expect("a batch results body");
    body.results
}

fn accepted(result: &BatchResult) -> &PublishAccepted {
    match &result.outcome {
        BatchOutcome::Accepted(accepted) if result.status == 202 => accepted,
        _ => panic!("expected 202, got {result:?}"),
    }
}

fn refused(result: &BatchResult) -> (u16, &ErrorBody) {
    match &result.outcome {
        BatchOutcome::Refused(error) => (result.status, error),
        BatchOutcome::Accepted(_) => panic!("expected a refusal, got {result:?}"),
    }
}

/// (id, seq) of the next event frame.
async fn next_event(client: &mut WsClient) -> (String, u64) {
    match client.next_event().await {
        ServerFrame::Event { id, seq, .. } => (id.to_string(), seq),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Polls the publisher's `/readyz` until it answers `status`.
async fn until_ready_is(publisher_url: &str, status: u16) {
    let client = herald_tests::http_client(Duration::from_secs(1));
    let url = format!("{publisher_url}/readyz");
    let polled = async {
        loop {
            if let Ok(response) = client.get(&url).send().await
                && response.status().as_u16() == status
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), polled)
        .await
        .unwrap_or_else(|_| panic!("{url} never answered {status}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_event_gets_its_own_status_and_the_valid_ones_are_delivered_once_in_order() {
    let stack = Stack::start(1).await;
    let url = stack.publisher.url();
    let (mut alice, _) = stack.edge().connect_as("u_1", &[]).await;
    let mut bad_dates = calendar_event("bad-dates", &["u_1"], &[]);
    bad_dates["data"]["ends_at"] = json!("2026-11-27T08:00:00Z");
    let mut unknown_type = calendar_event("unknown", &["u_1"], &[]);
    unknown_type["type"] = json!("calendar.event.exploded");
    let mut too_large = calendar_event("too-large", &["u_1"], &[]);
    too_large["data"]["title"] = json!("x".repeat(65 * 1024));
    let items = [
        calendar_event("e1", &["u_1"], &[]).to_string(),
        bad_dates.to_string(),
        unknown_type.to_string(),
        calendar_event("e2", &["u_1", "u_2"], &[]).to_string(),
        // The same id again, in the same batch: a duplicate of the first.
        calendar_event("e1", &["u_1"], &[]).to_string(),
        r#"{"id":"two-types","type":"calendar.event.deleted","type":"calendar.event.rsvp",
            "source":"s","audience":{"users":["u_1"]},"data":{"calendar_id":"c","event_id":"e"}}"#
            .to_string(),
        "42".to_string(),
        too_large.to_string(),
        calendar_event("e3", &["u_1"], &["team-42"]).to_string(),
    ];

    let results = results(post_batch(&url, batch_of(&items)).await);

    assert_eq!(results.len(), items.len(), "{results:?}");
    let first = accepted(&results[0]);
    assert!(!first.duplicate);
    let expected_refusals = [
        (1, 422, "VALIDATION_FAILED"),
        (2, 422, "UNKNOWN_EVENT_TYPE"),
        (5, 400, "MALFORMED_JSON"),
        (6, 422, "VALIDATION_FAILED"),
        (7, 413, "PAYLOAD_TOO_LARGE"),
    ];
    for (i, status, code) in expected_refusals {
        let (got_status, error) = refused(&results[i]);
        assert_eq!(
            (got_status, error.code.as_str()),
            (status, code),
            "item {i}"
        );
        assert_eq!(results[i].retry_after, None, "item {i}");
    }
    assert_eq!(refused(&results[1]).1.errors[0].path, "data.ends_at");
    let second = accepted(&results[3]);
    let repeat = accepted(&results[4]);
    let third = accepted(&results[8]);
    assert!(repeat.duplicate, "{repeat:?}");
    assert_eq!(repeat.published, first.published, "the original seqs");
    assert!(!second.duplicate && !third.duplicate);
    let seqs: Vec<u64> = [first, second, third]
        .iter()
        .flat_map(|a| a.published.iter().map(|p| p.seq))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "stored in batch order, nothing else");

    // The whole batch again: every valid event is a duplicate now.
    let again = results_again(&url, &items).await;
    for i in [0, 3, 4, 8] {
        assert!(accepted(&again[i]).duplicate, "item {i}: {:?}", again[i]);
    }
    let marker = stack
        .publish(&calendar_event("marker", &["u_1"], &[]))
        .await;
    assert_eq!(marker.published[0].seq, 6, "the repeat stored nothing");

    for expected in [("e1", 1), ("e2", 2), ("e3", 4), ("marker", 6)] {
        let got = next_event(&mut alice).await;
        assert_eq!((got.0.as_str(), got.1), expected, "exactly once, in order");
    }

    // Counted per event, as single publishes are: two batches and the marker.
    let scraped = scrape(&url).await;
    for (result, n) in [
        ("accepted", 4.0),
        ("duplicate", 5.0),
        ("rejected", 10.0),
        ("failed", 0.0),
    ] {
        assert_eq!(
            scraped.sum(
                "herald_publisher_events_total",
                &[("result", result), ("source", "http")]
            ),
            n,
            "{result}: {}",
            scraped.text
        );
    }
}

async fn results_again(url: &str, items: &[String]) -> Vec<BatchResult> {
    results(post_batch(url, batch_of(items)).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_events_are_accepted_and_all_delivered_in_order() {
    let stack = Stack::start(1).await;
    let (mut alice, _) = stack.edge().connect_as("u_1", &[]).await;
    let items: Vec<String> = (0..100)
        .map(|i| calendar_event(&format!("b-{i}"), &["u_1"], &[]).to_string())
        .collect();

    let results = results(post_batch(&stack.publisher.url(), batch_of(&items)).await);

    let seqs: Vec<u64> = results
        .iter()
        .map(|r| {
            let accepted = accepted(r);
            assert!(!accepted.duplicate);
            accepted.published[0].seq
        })
        .collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    for i in 0..100 {
        let got = next_event(&mut alice).await;
        assert_eq!(
            got,
            (format!("b-{i}"), i + 1),
            "lost, repeated or reordered"
        );
    }
    let marker = stack
        .publish(&calendar_event("marker", &["u_1"], &[]))
        .await;
    assert_eq!(
        next_event(&mut alice).await,
        ("marker".into(), marker.published[0].seq)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_over_one_mib_is_413_whether_announced_or_streamed_and_stores_nothing_and_one_under_it_is_stored()
 {
    let stack = Stack::start(0).await;
    let url = stack.publisher.url();
    // Each event is under 64 KiB; twenty of them are over 1 MiB.
    let items: Vec<String> = (0..20)
        .map(|i| {
            let mut event = calendar_event(&format!("big-{i}"), &["u_1"], &[]);
            event["data"]["location"] = json!("x".repeat(200));
            event["data"]["attendees"] = json!(vec!["y".repeat(250); 220]);
            event.to_string()
        })
        .collect();
    let body = batch_of(&items);
    assert!(body.len() > 1024 * 1024 && items.iter().all(|i| i.len() < 64 * 1024));

    let announced = post_batch(&url, body.clone()).await;
    // Without Content-Length: chunked, cut off while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let streamed = post_batch(
        &url,
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;

    for answer in [announced, streamed] {
        assert_eq!(answer.status, 413, "{:?}", answer.body);
        assert_eq!(answer.body["code"], "PAYLOAD_TOO_LARGE");
    }
    // Just under 1 MiB is taken whole; the same ids as above, none a duplicate.
    let under = batch_of(&items[..18]);
    assert!(under.len() < 1024 * 1024, "{}", under.len());
    let seqs: Vec<u64> = results(post_batch(&url, under).await)
        .iter()
        .map(|r| {
            assert!(!accepted(r).duplicate, "{r:?}");
            accepted(r).published[0].seq
        })
        .collect();
    assert_eq!(
        seqs,
        (1..=18).collect::<Vec<u64>>(),
        "nothing of the 413s was stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_a_batch_of_one_to_a_hundred_events_is_refused_whole() {
    let stack = Stack::start(0).await;
    let url = stack.publisher.url();
    let event = calendar_event("e1", &["u_1"], &[]).to_string();
    let hundred_and_one = batch_of(&vec![event.clone(); 101]);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("101 events", hundred_and_one, 422, "VALIDATION_FAILED"),
        ("no events", batch_of(&[]), 422, "VALIDATION_FAILED"),
        (
            "a single envelope",
            event.clone().into_bytes(),
            422,
            "VALIDATION_FAILED",
        ),
        (
            "an array",
            format!("[{event}]").into_bytes(),
            422,
            "VALIDATION_FAILED",
        ),
        (
            "not JSON",
            br#"{"events": [}"#.to_vec(),
            400,
            "MALFORMED_JSON",
        ),
        (
            "events twice",
            format!(r#"{{"events":[{event}],"events":[{event}]}}"#).into_bytes(),
            400,
            "MALFORMED_JSON",
        ),
    ];
    for (case, body, status, code) in cases {
        let answer = post_batch(&url, body).await;
        assert_eq!(answer.status, status, "{case}: {:?}", answer.body);
        assert_eq!(answer.body["code"], code, "{case}");
        if status == 422 {
            assert_eq!(answer.body["errors"][0]["path"], "events", "{case}");
        }
    }
    let no_token = herald_tests::http_client(WAIT)
        .post(format!("{url}/v1/events/batch"))
        .header("content-type", "application/json")
        .body(batch_of(&[event]))
        .send()
        .await
        .expect("post");
    assert_eq!(no_token.status(), 401);

    let marker = stack
        .publish(&calendar_event("marker", &["u_1"], &[]))
        .await;
    assert_eq!(
        marker.published[0].seq, 1,
        "nothing of any refused batch was stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_down_answers_every_event_503_and_a_retry_after_it_is_back_stores_each_once() {
    let Stack {
        publisher,
        mut nats,
        ..
    } = Stack::start(0).await;
    let url = publisher.url();
    let items: Vec<String> = (0..5)
        .map(|i| calendar_event(&format!("r-{i}"), &["u_1", "u_2"], &[]).to_string())
        .collect();

    nats.stop();
    until_ready_is(&url, 503).await;
    let down = results(post_batch(&url, batch_of(&items)).await);

    assert_eq!(down.len(), 5);
    for result in &down {
        let (status, error) = refused(result);
        assert_eq!((status, error.code.as_str()), (503, "NATS_UNAVAILABLE"));
        assert_eq!(result.retry_after, Some(1));
    }

    nats.start_again();
    until_ready_is(&url, 200).await;
    let retried = results(post_batch(&url, batch_of(&items)).await);
    let again = results(post_batch(&url, batch_of(&items)).await);

    let seqs = |results: &[BatchResult], duplicate: bool| -> Vec<u64> {
        results
            .iter()
            .flat_map(|r| {
                let accepted = accepted(r);
                assert_eq!(accepted.duplicate, duplicate, "{accepted:?}");
                accepted.published.iter().map(|p| p.seq).collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(seqs(&retried, false), (1..=10).collect::<Vec<u64>>());
    assert_eq!(seqs(&again, true), (1..=10).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_services_quota_the_rest_of_a_batch_is_429_each_with_retry_after() {
    let nats = herald_tests::nats::NatsServer::start();
    let mut config = herald_tests::apps::publisher_config(&nats);
    config.limits.quota_events_per_sec = 3;
    let publisher = herald_tests::apps::TestPublisher::spawn_with(config).await;
    let items: Vec<String> = (0..10)
        .map(|i| calendar_event(&format!("q-{i}"), &["u_1"], &[]).to_string())
        .collect();

    let results = results(post_batch(&publisher.url(), batch_of(&items)).await);

    let mut seqs = Vec::new();
    for result in &results {
        match &result.outcome {
            BatchOutcome::Accepted(accepted) => seqs.push(accepted.published[0].seq),
            BatchOutcome::Refused(error) => {
                assert_eq!((result.status, error.code.as_str()), (429, "RATE_LIMITED"));
                assert_eq!(result.retry_after, Some(1));
            }
        }
    }
    assert!(seqs.len() >= 3, "one second's worth passes: {results:?}");
    assert!(seqs.len() < 10, "the quota holds: {results:?}");
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<u64>>(),
        "only the accepted ones were stored, in order"
    );
}
