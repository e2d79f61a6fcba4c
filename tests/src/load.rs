//! Steady load for the fault tests: events published over HTTP at a rate,
//! retried (same id) through 503s, every channel's stored seqs recorded;
//! clients that keep reading and resuming; and the exact count at the end.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::{
    WAIT,
    clients::{calendar_event, post_event, service_token},
    resume::{ResumingClient, Seqs, Tally, tally},
};

/// Client `i` of a fault test: its own user channel and one of ten rooms.
pub fn client(i: usize) -> ResumingClient {
    ResumingClient::new(&format!("user-{i}"), &[&format!("room-{}", i % 10)])
}

/// Event `k` goes to one user, or to one room.
pub fn event(k: usize, n_clients: usize) -> serde_json::Value {
    let id = format!("event-{k}");
    if k.is_multiple_of(2) {
        calendar_event(&id, &[&format!("user-{}", (k / 2) % n_clients)], &[])
    } else {
        calendar_event(&id, &[], &[&format!("room-{}", (k / 2) % 10)])
    }
}

/// Publishes `n` events at about `per_second`, retrying each (same id) until
/// it is accepted (only 503, NATS unavailable, is retried); records every
/// channel's seqs in `expected`. Returns how many 503 answers were retried.
pub async fn publish_steadily(
    publisher_url: String,
    n: usize,
    n_clients: usize,
    per_second: u64,
    expected: Arc<Mutex<Seqs>>,
) -> usize {
    publish_range(&publisher_url, 0..n, n_clients, per_second, &expected).await
}

/// Publishes events `range` at about `per_second` (see [`publish_steadily`]);
/// returns how many 503 answers were retried.
pub async fn publish_range(
    publisher_url: &str,
    range: std::ops::Range<usize>,
    n_clients: usize,
    per_second: u64,
    expected: &Mutex<Seqs>,
) -> usize {
    let token = service_token();
    let mut retried = 0;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    for k in range {
        ticker.tick().await;
        let body = event(k, n_clients);
        let accepted = tokio::time::timeout(WAIT * 3, async {
            loop {
                let answer = post_event(publisher_url, &token, &body).await;
                if answer.status == 202 {
                    return answer.body;
                }
                assert_eq!(
                    answer.status, 503,
                    "only NATS_UNAVAILABLE is retried: {:?}",
                    answer.body
                );
                retried += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the publisher accepts again in time");
        let mut expected = expected.lock().unwrap();
        for published in accepted["published"].as_array().unwrap() {
            let channel = published["channel"].as_str().unwrap().to_string();
            expected
                .entry(channel)
                .or_default()
                .push(published["seq"].as_u64().unwrap());
        }
    }
    retried
}

/// As [`publish_steadily`], until `stop` fires (between two events) or
/// `max` are published; returns how many were, and how many 503 answers
/// were retried.
pub async fn publish_until(
    publisher_url: String,
    max: usize,
    n_clients: usize,
    per_second: u64,
    expected: Arc<Mutex<Seqs>>,
    stop: CancellationToken,
) -> (usize, usize) {
    let (mut k, mut retried) = (0, 0);
    let batch = per_second as usize / 10;
    while k < max && !stop.is_cancelled() {
        // A tenth of a second's worth at a time, numbered on from `k`.
        retried += publish_range(
            &publisher_url,
            k..k + batch,
            n_clients,
            per_second,
            &expected,
        )
        .await;
        k += batch;
    }
    (k, retried)
}

/// Keeps a client reading; on a lost connection it resumes on the first of
/// `edges` that accepts, with its cursors, and counts the reconnection in
/// `reconnects`. Returns it when `stop` fires.
pub fn keep_reading(
    mut client: ResumingClient,
    edges: Vec<String>,
    reconnects: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<ResumingClient> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return client,
                read = client.next() => {
                    if read.is_ok() {
                        continue;
                    }
                    reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut reconnected = false;
                    for edge in edges.iter().cycle().take(edges.len() * 20) {
                        if client.connect(edge).await.is_ok() {
                            reconnected = true;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    assert!(reconnected, "{} could not reconnect", client.user);
                }
            }
        }
    })
}

/// What `client` should have received: the seqs of its channels.
pub fn expected_for(client: &ResumingClient, all: &Seqs) -> Seqs {
    expected_of(&client.user, &client.namespaces, all)
}

fn expected_of(user: &str, namespaces: &[String], all: &Seqs) -> Seqs {
    std::iter::once(format!("user:{user}"))
        .chain(namespaces.iter().map(|ns| format!("ns:{ns}")))
        .map(|c| (c.clone(), all.get(&c).cloned().unwrap_or_default()))
        .collect()
}

/// Waits (bounded) until every client has as many events as expected, then
/// sums the tallies. `users` holds each client's user and room, in the order
/// of `clients`.
pub async fn settle(clients: &[Arc<Mutex<Seqs>>], users: &[(String, String)], all: &Seqs) -> Tally {
    let sum = || {
        let mut total = Tally::default();
        for (received, (user, room)) in clients.iter().zip(users) {
            let expected = expected_of(user, std::slice::from_ref(room), all);
            let t = tally(&expected, &received.lock().unwrap());
            total.expected += t.expected;
            total.delivered += t.delivered;
            total.lost += t.lost;
            total.duplicated += t.duplicated;
            total.out_of_order += t.out_of_order;
        }
        total
    };
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while sum().delivered < sum().expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = sum();
    if total.lost > 0 {
        print_missing(clients, users, all);
    }
    total
}

/// Which client misses which seqs of which channel, and the last seq it has
/// there: where a loss is, so a failed tally can be told from a slow one.
fn print_missing(clients: &[Arc<Mutex<Seqs>>], users: &[(String, String)], all: &Seqs) {
    for (i, (received, (user, room))) in clients.iter().zip(users).enumerate() {
        let received = received.lock().unwrap();
        for (channel, want) in expected_of(user, std::slice::from_ref(room), all) {
            let got = received
                .get(&channel)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let missing: Vec<u64> = want.into_iter().filter(|s| !got.contains(s)).collect();
            if !missing.is_empty() {
                #[allow(clippy::print_stderr, reason = "where the loss is, for the report")]
                {
                    eprintln!(
                        "client {i} ({user}) misses {missing:?} on {channel}; its last there is {:?}",
                        got.last()
                    );
                }
            }
        }
    }
}
