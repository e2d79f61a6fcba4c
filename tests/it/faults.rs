//! Fault tests, counted exactly: an edge killed under load, and nats-server
//! restarted under load. Every client ends with every event of its channels,
//! once, in order.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use herald_tests::{
    WAIT,
    apps::{Stack, TestEdge, edge_config},
    clients::{calendar_event, post_event, service_token},
    proxy::CrashProxy,
    resume::{ResumingClient, Seqs, Tally, tally},
};
use tokio_util::sync::CancellationToken;

/// The channels client `i` listens on: its own and one of ten rooms.
fn client(i: usize) -> ResumingClient {
    ResumingClient::new(&format!("user-{i}"), &[&format!("room-{}", i % 10)])
}

/// Event `k` goes to one user, or to one room.
fn event(k: usize, n_clients: usize) -> serde_json::Value {
    let id = format!("event-{k}");
    if k.is_multiple_of(2) {
        calendar_event(&id, &[&format!("user-{}", (k / 2) % n_clients)], &[])
    } else {
        calendar_event(&id, &[], &[&format!("room-{}", (k / 2) % 10)])
    }
}

/// Publishes `n` events at about `per_second`, retrying each (same id) until
/// it is accepted; records every channel's seqs. `at_half` runs halfway.
async fn publish_steadily(
    publisher_url: String,
    n: usize,
    n_clients: usize,
    per_second: u64,
    expected: Arc<Mutex<Seqs>>,
    at_half: impl FnOnce() + Send,
) {
    let token = service_token();
    let mut at_half = Some(at_half);
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    for k in 0..n {
        ticker.tick().await;
        if k == n / 2 {
            at_half.take().unwrap()();
        }
        let body = event(k, n_clients);
        let accepted = tokio::time::timeout(WAIT * 3, async {
            loop {
                let answer = post_event(&publisher_url, &token, &body).await;
                if answer.status == 202 {
                    return answer.body;
                }
                assert_eq!(
                    answer.status, 503,
                    "only NATS_UNAVAILABLE is retried: {:?}",
                    answer.body
                );
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
}

/// Keeps a client reading; on a lost connection it resumes on the first of
/// `edges` that accepts, with its cursors. Returns it when `stop` fires.
fn keep_reading(
    mut client: ResumingClient,
    edges: Vec<String>,
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

/// What `client` should have received: the seqs of its two channels.
fn expected_for(client: &ResumingClient, all: &Seqs) -> Seqs {
    let channels = [
        format!("user:{}", client.user),
        format!("ns:{}", client.namespaces[0]),
    ];
    channels
        .into_iter()
        .map(|c| (c.clone(), all.get(&c).cloned().unwrap_or_default()))
        .collect()
}

/// Waits until every client has as many events as expected, then sums the tallies.
async fn settle(clients: &[Arc<Mutex<Seqs>>], users: &[(String, String)], all: &Seqs) -> Tally {
    let sum = || {
        let mut total = Tally::default();
        for (received, (user, room)) in clients.iter().zip(users) {
            let channels = [format!("user:{user}"), format!("ns:{room}")];
            let expected: Seqs = channels
                .into_iter()
                .map(|c| (c.clone(), all.get(&c).cloned().unwrap_or_default()))
                .collect();
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
    sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_of_a_killed_edge_resume_on_the_other_with_nothing_lost_or_twice() {
    const N_CLIENTS: usize = 100;
    let mut stack = Stack::start(2).await;
    let proxy_a = CrashProxy::start(stack.edges[0].addr).await;
    let ws_b = format!("ws://{}/v1/ws", stack.edges[1].addr);
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut progress = Vec::new();
    let mut users = Vec::new();
    for i in 0..N_CLIENTS {
        let mut client = client(i);
        let first = if i % 2 == 0 {
            proxy_a.ws_base()
        } else {
            ws_b.clone()
        };
        client.connect(&first).await.unwrap();
        progress.push(client.received.clone());
        users.push((client.user.clone(), client.namespaces[0].clone()));
        tasks.push(keep_reading(client, vec![ws_b.clone()], stop.clone()));
    }

    let expected = Arc::new(Mutex::new(Seqs::new()));
    let killed = stack.edges.remove(0);
    publish_steadily(
        stack.publisher.url(),
        600,
        N_CLIENTS,
        200,
        expected.clone(),
        move || {
            proxy_a.crash();
            drop(killed);
        },
    )
    .await;

    let all = expected.lock().unwrap().clone();
    let tally = settle(&progress, &users, &all).await;
    stop.cancel();
    for task in tasks {
        let client = task.await.unwrap();
        assert_eq!(
            *client.received.lock().unwrap(),
            expected_for(&client, &all),
            "{} in order",
            client.user
        );
    }
    tally.assert_exact("edge killed under load");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_restart_under_load_loses_and_repeats_nothing() {
    const N_CLIENTS: usize = 20;
    let mut stack = Stack::start(0).await;
    stack.edges.push(
        TestEdge::spawn_with(herald_edge::Config {
            reconcile_interval: Duration::from_secs(1),
            ..edge_config(&stack.nats, "edge-a")
        })
        .await,
    );
    let ws = format!("ws://{}/v1/ws", stack.edge().addr);
    let stop = CancellationToken::new();
    let (mut tasks, mut progress, mut users) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..N_CLIENTS {
        let mut client = client(i);
        client.connect(&ws).await.unwrap();
        progress.push(client.received.clone());
        users.push((client.user.clone(), client.namespaces[0].clone()));
        tasks.push(keep_reading(client, vec![ws.clone()], stop.clone()));
    }

    let expected = Arc::new(Mutex::new(Seqs::new()));
    let Stack {
        publisher,
        edges,
        nats,
    } = stack;
    let nats = Arc::new(Mutex::new(nats));
    let restarted = Arc::new(tokio::sync::Notify::new());
    publish_steadily(publisher.url(), 300, N_CLIENTS, 100, expected.clone(), {
        let (nats, restarted) = (nats.clone(), restarted.clone());
        move || {
            // Kill and restart on the same store and port while events keep coming.
            tokio::task::spawn_blocking(move || {
                nats.lock().unwrap().restart();
                restarted.notify_one();
            });
        }
    })
    .await;
    tokio::time::timeout(WAIT, restarted.notified())
        .await
        .expect("nats-server restarted");

    let all = expected.lock().unwrap().clone();
    let tally = settle(&progress, &users, &all).await;
    stop.cancel();
    for task in tasks {
        let client = task.await.unwrap();
        assert_eq!(
            *client.received.lock().unwrap(),
            expected_for(&client, &all),
            "{} in order",
            client.user
        );
    }
    drop((publisher, edges));
    tally.assert_exact("nats-server restarted under load");
}
