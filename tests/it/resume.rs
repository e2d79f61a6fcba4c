//! Resume from per-channel cursors on any edge, `history_truncated`, and gap
//! repair of live messages that never arrived. Every count is exact.

use std::time::{Duration, Instant};

use herald_shared::frames::ServerFrame;
use herald_tests::{
    WAIT,
    apps::{Stack, TestEdge, TestPublisher, edge_config, publisher_config},
    clients::{WsClient, calendar_event, user_token},
    nats::NatsServer,
    resume::{ResumingClient, Seqs, Tally},
    store::store_without_live_copy,
};

/// Publishes `body` and records each channel's seq in `expected`.
async fn publish(stack: &Stack, expected: &mut Seqs, body: serde_json::Value) {
    for published in stack.publish(&body).await.published {
        expected
            .entry(published.channel.to_string())
            .or_default()
            .push(published.seq);
    }
}

/// Reads until `client` has as many events as `expected` holds (bounded).
async fn read_until_complete(client: &mut ResumingClient, expected: &Seqs) -> Tally {
    let want: usize = expected.values().map(Vec::len).sum();
    let reading = async {
        while client.tally(expected).delivered < want {
            client.next().await.expect("the connection stays up");
        }
    };
    let _ = tokio::time::timeout(WAIT, reading).await;
    client.tally(expected)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_resumes_on_the_other_edge_with_exactly_what_it_missed_then_live() {
    let stack = Stack::start(2).await;
    let ws_a = format!("ws://{}/v1/ws", stack.edges[0].addr);
    let ws_b = format!("ws://{}/v1/ws", stack.edges[1].addr);
    let mut expected = Seqs::new();
    let mut client = ResumingClient::new("u1", &["team"]);
    client.connect(&ws_a).await.unwrap();
    publish(
        &stack,
        &mut expected,
        calendar_event("first", &["u1"], &["team"]),
    )
    .await;
    read_until_complete(&mut client, &expected)
        .await
        .assert_exact("before the disconnect");

    client.disconnect();
    for i in 0..50 {
        let body = match i % 3 {
            0 => calendar_event(&format!("away-{i}"), &["u1"], &[]),
            1 => calendar_event(&format!("away-{i}"), &[], &["team"]),
            _ => calendar_event(
                &format!("away-{i}"),
                &["u1", "someone-else"],
                &["team", "other"],
            ),
        };
        publish(&stack, &mut expected, body).await;
    }
    expected.retain(|channel, _| channel == "user:u1" || channel == "ns:team");
    client.connect(&ws_b).await.unwrap();
    for i in 0..5 {
        publish(
            &stack,
            &mut expected,
            calendar_event(&format!("live-{i}"), &["u1"], &["team"]),
        )
        .await;
    }

    let tally = read_until_complete(&mut client, &expected).await;
    tally.assert_exact("resumed on edge-b");
    assert_eq!(
        *client.received.lock().unwrap(),
        expected,
        "every channel in seq order"
    );
}

/// `welcome.seqs` is where each channel starts for this client: the cursor it
/// resumes from, so a client that takes it as its cursor and drops mid-replay
/// gets the replay again; the channel's latest seq for a client without one.
#[tokio::test(flavor = "multi_thread")]
async fn welcome_seqs_are_the_resumed_cursor_or_the_latest_seq() {
    let stack = Stack::start(1).await;
    let mut last = 0;
    for i in 0..3 {
        last = stack
            .publish(&calendar_event(&format!("e{i}"), &["u1"], &[]))
            .await
            .published[0]
            .seq;
    }
    let channel: herald_shared::channel::Channel = "user:u1".parse().unwrap();
    let welcome_seq = |welcome: ServerFrame| match welcome {
        ServerFrame::Welcome { seqs, .. } => seqs.get(&channel).copied(),
        other => panic!("expected welcome, got {other:?}"),
    };

    let fresh = stack
        .edge()
        .ws_url(&format!("token={}", user_token("u1", &[])));
    let (_, welcome) = WsClient::connect_welcomed(&fresh).await;
    assert_eq!(
        welcome_seq(welcome),
        Some(last),
        "no cursor: the latest seq"
    );

    let since = last - 2;
    let resuming = stack
        .edge()
        .ws_url(&format!("token={}&since={since}", user_token("u1", &[])));
    let (mut client, welcome) = WsClient::connect_welcomed(&resuming).await;
    assert_eq!(welcome_seq(welcome), Some(since), "resuming: the cursor");
    for expected in since + 1..=last {
        assert!(
            matches!(client.next_event().await, ServerFrame::Event { seq, .. } if seq == expected),
            "replayed {expected}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_from_another_epoch_gets_history_truncated_and_live_goes_on() {
    let stack = Stack::start(1).await;
    stack.publish(&calendar_event("old", &["u1"], &[])).await;
    let url = stack.edge().ws_url(&format!(
        "token={}&since=0&epoch=some-other-epoch",
        user_token("u1", &[])
    ));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;

    assert_eq!(
        client.next_frame().await,
        ServerFrame::HistoryTruncated {
            channel: "user:u1".parse().unwrap(),
            first_seq: 1
        }
    );
    let live = stack.publish(&calendar_event("live", &["u1"], &[])).await;
    assert!(
        matches!(client.next_event().await, ServerFrame::Event { seq, .. } if seq == live.published[0].seq)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_older_than_the_retained_history_gets_history_truncated() {
    let nats = NatsServer::start();
    let mut config = publisher_config(&nats);
    config.stream.max_bytes = 4096; // a few notifications: the oldest are dropped
    let publisher = TestPublisher::spawn_with(config).await;
    let edge = TestEdge::spawn(&nats, "edge-a").await;
    let token = herald_tests::clients::service_token();
    for i in 0..40 {
        let answer = herald_tests::clients::post_event(
            &publisher.url(),
            &token,
            &calendar_event(&format!("e{i}"), &["u1"], &[]),
        )
        .await;
        assert_eq!(answer.status, 202);
    }

    let url = edge.ws_url(&format!("token={}&since=1", user_token("u1", &[])));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;

    let ServerFrame::HistoryTruncated { channel, first_seq } = client.next_frame().await else {
        panic!("expected history_truncated");
    };
    assert_eq!(channel.to_string(), "user:u1");
    assert!(first_seq > 2 && first_seq <= 40, "first_seq {first_seq}");
}

#[tokio::test(flavor = "multi_thread")]
async fn resuming_after_a_thousand_missed_events_replays_them_all_in_order() {
    // A 64 KiB queue for ~400 KiB of history: replay must wait for the socket
    // to drain rather than trip SLOW_CONSUMER on a client that reads.
    let nats = NatsServer::start();
    let publisher = TestPublisher::spawn(&nats).await;
    let edge = TestEdge::spawn_with(herald_edge::Config {
        outbound_queue_bytes: 64 * 1024,
        ..edge_config(&nats, "edge-a")
    })
    .await;
    let stack = Stack {
        publisher,
        edges: vec![edge],
        nats,
    };
    let ws = format!("ws://{}/v1/ws", stack.edge().addr);
    let mut expected = Seqs::new();
    let mut client = ResumingClient::new("u1", &[]);
    client.connect(&ws).await.unwrap();
    publish(&stack, &mut expected, calendar_event("first", &["u1"], &[])).await;
    read_until_complete(&mut client, &expected).await;
    client.disconnect();
    for i in 0..1000 {
        publish(
            &stack,
            &mut expected,
            calendar_event(&format!("missed-{i}"), &["u1"], &[]),
        )
        .await;
    }

    let started = Instant::now();
    client.connect(&ws).await.unwrap();
    let tally = read_until_complete(&mut client, &expected).await;
    // Printed for the record, never asserted: timings belong to benchmarks.
    eprintln!("resumed 1000 missed events in {:?}", started.elapsed());
    tally.assert_exact("1000 missed events");
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_live_messages_are_repaired_mid_channel_and_as_the_last_message() {
    let nats = NatsServer::start();
    let publisher = TestPublisher::spawn(&nats).await;
    let edge = TestEdge::spawn_with(herald_edge::Config {
        reconcile_interval: Duration::from_millis(200),
        ..edge_config(&nats, "edge-a")
    })
    .await;
    let stack = Stack {
        publisher,
        edges: vec![edge],
        nats,
    };
    let mut expected = Seqs::new();
    let mut client = ResumingClient::new("u1", &[]);
    client
        .connect(&format!("ws://{}/v1/ws", stack.edge().addr))
        .await
        .unwrap();
    publish(&stack, &mut expected, calendar_event("e1", &["u1"], &[])).await;

    // Mid-channel: the next live message's Nats-Last-Sequence reveals the gap.
    let lost =
        store_without_live_copy(&stack.nats, &calendar_event("lost-mid", &["u1"], &[])).await;
    expected.get_mut("user:u1").unwrap().push(lost);
    publish(&stack, &mut expected, calendar_event("e3", &["u1"], &[])).await;
    read_until_complete(&mut client, &expected)
        .await
        .assert_exact("a lost message mid-channel");

    // Last message: nothing follows it; only a reconcile pass can find it.
    let lost =
        store_without_live_copy(&stack.nats, &calendar_event("lost-last", &["u1"], &[])).await;
    expected.get_mut("user:u1").unwrap().push(lost);
    read_until_complete(&mut client, &expected)
        .await
        .assert_exact("a lost last message");
    assert_eq!(*client.received.lock().unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn welcome_gives_each_channel_a_starting_seq_so_a_client_without_events_can_resume() {
    let stack = Stack::start(2).await;
    stack
        .publish(&calendar_event("before", &["u1"], &["team"]))
        .await;
    let token = user_token("u1", &["team"]);
    let url = stack.edges[0].ws_url(&format!("token={token}&ns=team"));
    let (first, welcome) = WsClient::connect_welcomed(&url).await;
    let ServerFrame::Welcome { seqs, epoch, .. } = welcome else {
        unreachable!()
    };
    let user: herald_shared::channel::Channel = "user:u1".parse().unwrap();
    let team: herald_shared::channel::Channel = "ns:team".parse().unwrap();
    assert_eq!(
        (seqs[&user], seqs[&team]),
        (1, 2),
        "the latest seq of each channel at connect"
    );

    // Never received an event; away while two are stored; back with welcome's
    // seqs as per-channel cursors, as herald.js does: the user channel at
    // connect, the namespace in its own `subscribe`.
    first.close().await;
    let missed = stack
        .publish(&calendar_event("missed", &["u1"], &["team"]))
        .await;
    let query = format!("token={token}&since={}&epoch={epoch}", seqs[&user]);
    let (mut back, _) = WsClient::connect_welcomed(&stack.edges[1].ws_url(&query)).await;
    let subscribe = serde_json::json!({
        "type": "subscribe", "ref": "t", "namespace": "team", "since": seqs[&team], "epoch": epoch
    });
    back.send_json(&subscribe).await;

    let mut got: Vec<(String, u64)> = Vec::new();
    while got.len() < 2 {
        if let ServerFrame::Event { channel, seq, .. } = back.next_frame().await {
            got.push((channel.to_string(), seq));
        }
    }
    got.sort();
    let mut want: Vec<(String, u64)> = missed
        .published
        .iter()
        .map(|p| (p.channel.to_string(), p.seq))
        .collect();
    want.sort();
    assert_eq!(got, want, "exactly the missed events, nothing from before");
}
