//! What one publish and one service may store: the bound on an event's stored
//! bytes (channels × notification), over HTTP and NATS, and the per-service
//! quota (events/s and bytes/s per token `sub`) answered 429 with `Retry-After`.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context};
use herald_shared::{
    api::DeadLetter,
    envelope::parse_event,
    events::EventType,
    stream::{DEAD_LETTER_STREAM, NOTIFY_STREAM},
    subject::domain_subject,
};
use herald_tests::{
    WAIT,
    apps::{TestPublisher, publisher_config},
    clients::{
        Answer, TEST_SECRET, calendar_event, post_event, service_claims, service_token, sign,
    },
    nats::NatsServer,
};
use serde_json::{Value, json};

/// The bound the tests set: a 1,000-user event of the usual size is far over it.
const MAX_STORED: u64 = 100_000;

/// `n` distinct users, `u0`…
fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("u{i}")).collect()
}

fn event_to(id: &str, users: &[String]) -> Value {
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    calendar_event(id, &users, &[])
}

/// The bytes `event` stores: its notification once per channel.
fn stored_bytes(event: &Value) -> u64 {
    let valid = parse_event(&serde_json::to_vec(event).unwrap()).unwrap();
    let notification = serde_json::to_vec(&valid.notification()).unwrap();
    (notification.len() * valid.channels.len()) as u64
}

async fn jetstream(nats: &NatsServer) -> Context {
    let client = tokio::time::timeout(WAIT, async_nats::connect(&nats.url))
        .await
        .expect("connect in time")
        .expect("connect to NATS");
    jetstream::new(client)
}

async fn n_messages(js: &Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.expect("the stream exists");
    stream.info().await.expect("stream info").state.messages
}

/// Polls until `stream` holds `n` messages.
async fn wait_for_messages(js: &Context, stream: &str, n: u64) {
    tokio::time::timeout(WAIT, async {
        while n_messages(js, stream).await != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{stream} should hold {n} messages"));
}

fn retry_after(answer: &Answer) -> Option<&str> {
    answer
        .headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap())
}

/// A token for another service: same audience and scope, another `sub`.
fn token_of(sub: &str) -> String {
    let mut claims = service_claims();
    claims["sub"] = json!(sub);
    sign(&claims, TEST_SECRET)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_over_the_stored_bytes_bound_is_refused_and_stores_nothing() {
    let nats = NatsServer::start();
    let mut config = publisher_config(&nats);
    config.limits.max_event_stored_bytes = MAX_STORED;
    let publisher = TestPublisher::spawn_with(config).await;
    let js = jetstream(&nats).await;
    let big = event_to("big", &users(1000));
    assert!(stored_bytes(&big) > MAX_STORED);

    let refused = post_event(&publisher.url(), &service_token(), &big).await;

    assert_eq!(refused.status, 413, "{}", refused.body["code"]);
    assert_eq!(refused.body["code"], "PAYLOAD_TOO_LARGE");
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains(&MAX_STORED.to_string()),
        "{:?}",
        refused.body
    );
    assert_eq!(n_messages(&js, NOTIFY_STREAM).await, 0, "nothing stored");
    let small = post_event(
        &publisher.url(),
        &service_token(),
        &event_to("small", &users(3)),
    )
    .await;
    assert_eq!(small.status, 202, "{:?}", small.body);
    assert_eq!(n_messages(&js, NOTIFY_STREAM).await, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_domain_event_over_the_stored_bytes_bound_is_dead_lettered_and_stores_nothing() {
    let nats = NatsServer::start();
    let mut config = publisher_config(&nats);
    config.limits.max_event_stored_bytes = MAX_STORED;
    let _publisher = TestPublisher::spawn_with(config).await;
    let js = jetstream(&nats).await;
    let subject = domain_subject(EventType::CalendarEventUpdated).to_string();

    for event in [event_to("big", &users(1000)), event_to("small", &users(1))] {
        tokio::time::timeout(WAIT, async {
            js.publish(subject.clone(), event.to_string().into())
                .await?
                .await
        })
        .await
        .expect("stored in time")
        .expect("the domain stream stores it");
    }

    wait_for_messages(&js, DEAD_LETTER_STREAM, 1).await;
    wait_for_messages(&js, NOTIFY_STREAM, 1).await;
    let dead_letters = js.get_stream(DEAD_LETTER_STREAM).await.unwrap();
    let first = dead_letters.cached_info().state.first_sequence;
    let record: DeadLetter =
        serde_json::from_slice(&dead_letters.get_raw_message(first).await.unwrap().payload)
            .unwrap();
    assert_eq!(record.code.as_str(), "PAYLOAD_TOO_LARGE", "{record:?}");
}

/// Posts `event(k)` with `token` until one is refused (at most 20 tries);
/// returns how many were accepted before it, and the refusal.
async fn post_until_refused(
    url: &str,
    token: &str,
    event: impl Fn(usize) -> Value,
) -> (usize, Answer) {
    let started = Instant::now();
    for k in 0..20 {
        let answer = post_event(url, token, &event(k)).await;
        if answer.status != 202 {
            // A slow machine may refill the bucket between two posts, but
            // not by more than the time that passed.
            let allowance = 1 + started.elapsed().as_secs() as usize;
            assert!(k <= 2 * allowance, "{k} accepted before the first refusal");
            return (k, answer);
        }
    }
    panic!("20 posts in a row were accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_over_its_event_quota_gets_429_while_another_service_is_served() {
    let nats = NatsServer::start();
    let mut config = publisher_config(&nats);
    config.limits.quota_events_per_sec = 1;
    let publisher = TestPublisher::spawn_with(config).await;
    let js = jetstream(&nats).await;
    let url = publisher.url();

    let (n_accepted, refused) = post_until_refused(&url, &service_token(), |k| {
        event_to(&format!("a{k}"), &users(1))
    })
    .await;
    let other = post_event(
        &url,
        &token_of("billing-service"),
        &event_to("b1", &users(1)),
    )
    .await;

    assert!(n_accepted >= 1, "one second's worth passes");
    assert_eq!(refused.status, 429, "{}", refused.body["code"]);
    assert_eq!(refused.body["code"], "RATE_LIMITED");
    assert_eq!(retry_after(&refused), Some("1"));
    assert_eq!(other.status, 202, "another service: {}", other.body["code"]);
    assert_eq!(
        n_messages(&js, NOTIFY_STREAM).await,
        n_accepted as u64 + 1,
        "the refused event stored nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_over_its_byte_quota_gets_429_with_retry_after_rounded_up() {
    let nats = NatsServer::start();
    let mut config = publisher_config(&nats);
    // Bursts of one second's worth (here also the most one event may store).
    let bytes_per_sec = MAX_STORED;
    config.limits.max_event_stored_bytes = MAX_STORED;
    config.limits.quota_bytes_per_sec = bytes_per_sec;
    let publisher = TestPublisher::spawn_with(config).await;
    let url = publisher.url();
    // Each event stores about 75 % of a second's allowance.
    let per_user = stored_bytes(&event_to("a0", &users(1)));
    let n_users = (bytes_per_sec * 3 / 4 / per_user) as usize;
    let event = |k: usize| event_to(&format!("a{k}"), &users(n_users));
    let cost = stored_bytes(&event(0));
    assert!(cost > bytes_per_sec / 2 && cost <= bytes_per_sec);

    let (n_accepted, refused) = post_until_refused(&url, &service_token(), event).await;
    let other = post_event(&url, &token_of("billing-service"), &event(99)).await;

    assert!(n_accepted >= 1, "one second's worth passes");
    assert_eq!(refused.status, 429, "{}", refused.body["code"]);
    assert_eq!(refused.body["code"], "RATE_LIMITED");
    // The wait is under a second (at most the event's cost at the rate):
    // rounded up to 1, never 0.
    assert_eq!(retry_after(&refused), Some("1"));
    assert_eq!(other.status, 202, "another service: {}", other.body["code"]);
}
