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
    load::{client, expected_for, keep_reading, publish_range, settle},
    proxy::CrashProxy,
    resume::Seqs,
};
use tokio_util::sync::CancellationToken;

/// Publishes `n` events at about `per_second` (see
/// [`herald_tests::load::publish_steadily`]); `at_half` runs halfway.
async fn publish_steadily(
    publisher_url: String,
    n: usize,
    n_clients: usize,
    per_second: u64,
    expected: Arc<Mutex<Seqs>>,
    at_half: impl FnOnce() + Send,
) {
    publish_range(&publisher_url, 0..n / 2, n_clients, per_second, &expected).await;
    at_half();
    publish_range(&publisher_url, n / 2..n, n_clients, per_second, &expected).await;
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
        tasks.push(keep_reading(
            client,
            vec![ws_b.clone()],
            Arc::default(),
            stop.clone(),
        ));
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
        tasks.push(keep_reading(
            client,
            vec![ws.clone()],
            Arc::default(),
            stop.clone(),
        ));
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
