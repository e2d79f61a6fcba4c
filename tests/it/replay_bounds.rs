//! Replay within bounds: a resume storm neither knocks the edge off NATS nor
//! stalls a client, replays end with their socket's interest in the channel,
//! and a cursor older than what the stream still holds always hears so.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use herald_shared::frames::ServerFrame;
use herald_tests::{
    WAIT,
    apps::{TestEdge, TestPublisher, edge_config, publisher_config},
    clients::{WsClient, calendar_event, post_event, service_token, user_token},
    metrics::{scrape, wait_for},
    nats::NatsServer,
    resume::{Seqs, tally},
    store::store_many,
};
use serde_json::{Value, json};

/// `calendar_event` with `n_attendees` long attendee ids: about 64 bytes each.
fn big_event(id: &str, users: &[&str], namespaces: &[&str], n_attendees: usize) -> Value {
    let mut body = calendar_event(id, users, namespaces);
    let attendees: Vec<String> = (0..n_attendees)
        .map(|i| format!("attendee-{i:05}-{}", "x".repeat(48)))
        .collect();
    body["data"]["attendees"] = json!(attendees);
    body
}

/// `VmHWM` and `VmRSS` of this process (the edge runs in it), for the
/// report printed by the tests; not asserted.
fn memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with("VmHWM") || line.starts_with("VmRSS"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The edge's `/metrics` base URL.
fn metrics_url(edge: &TestEdge) -> String {
    format!("http://{}", edge.addr)
}

/// Item 1 (and 9): many clients resume a large history at once. Every one
/// of them completes with nothing lost and nothing twice, the edge is never
/// cut off as a slow consumer by nats-server, and a live client on the same
/// edge keeps getting its events promptly meanwhile.
///
/// nats-server's `max_pending` is lowered to 2 MB (64 MB by default) so a
/// storm of ~25 MB is enough to show what 40 clients × 18 MB did.
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_storm_completes_for_every_client_and_never_cuts_the_edge_off_nats() {
    const N_CLIENTS: usize = 20;
    const N_STORED: usize = 40;
    const N_LIVE: usize = 20;
    let nats = NatsServer::start_with_config("max_pending: 2MB\n");
    let publisher = TestPublisher::spawn(&nats).await;
    let edge = TestEdge::spawn_with(herald_edge::Config {
        // 4 pages of 128 KiB in flight at most: well under the 2 MB.
        replay_page_bytes: 128 * 1024,
        replay_concurrency: 4,
        ..edge_config(&nats, "edge-a")
    })
    .await;
    // ~31 KB notifications, as the probe's ~60 KB ones at half the scale.
    let seqs = store_many(&nats, &big_event("big", &[], &["big"], 480), N_STORED).await;
    let expected: Seqs = HashMap::from([("ns:big".to_string(), seqs)]);

    // A live client on the same edge, and a steady trickle of its events.
    let (mut live, _) =
        WsClient::connect_welcomed(&edge.ws_url(&format!("token={}", user_token("live", &[]))))
            .await;
    let published_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let publishing = tokio::spawn({
        let url = publisher.url();
        let published_at = published_at.clone();
        async move {
            for i in 0..N_LIVE {
                let sent = Instant::now();
                let answer = post_event(
                    &url,
                    &service_token(),
                    &calendar_event(&format!("live-{i}"), &["live"], &[]),
                )
                .await;
                assert_eq!(answer.status, 202);
                let seq = answer.body["published"][0]["seq"].as_u64().expect("a seq");
                published_at.lock().unwrap().insert(seq, sent);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let listening = tokio::spawn(async move {
        let mut latencies = Vec::new();
        while latencies.len() < N_LIVE {
            match live.try_next_frame().await {
                Ok(ServerFrame::Event { .. }) => latencies.push(Instant::now()),
                Ok(_) => {}
                Err(why) => panic!("the live client's socket ended: {why}"),
            }
        }
        latencies
    });

    // The storm: every client resumes `ns:big` from 0 at once.
    let storm: Vec<_> = (0..N_CLIENTS)
        .map(|i| {
            let url = edge.ws_url(&format!(
                "token={}&ns=big&since=0",
                user_token(&format!("u{i}"), &["big"])
            ));
            let expected = expected.clone();
            tokio::spawn(async move {
                let mut received = Seqs::new();
                let mut client = WsClient::try_connect(&url).await?;
                while tally(&expected, &received).delivered < N_STORED {
                    match client.try_next_frame().await? {
                        ServerFrame::Event { channel, seq, .. } => {
                            received.entry(channel.to_string()).or_default().push(seq)
                        }
                        ServerFrame::Error { code, message, .. } => {
                            return Err(format!("{code:?}: {message}"));
                        }
                        _ => {}
                    }
                }
                Ok::<_, String>(received)
            })
        })
        .collect();
    let mut n_completed = 0;
    let mut failures = Vec::new();
    for client in storm {
        match tokio::time::timeout(Duration::from_secs(60), client).await {
            Ok(Ok(Ok(received))) => {
                tally(&expected, &received).assert_exact("a storm client");
                n_completed += 1;
            }
            Ok(Ok(Err(why))) => failures.push(why),
            Ok(Err(panicked)) => failures.push(panicked.to_string()),
            Err(_) => failures.push("stalled: nothing for 60 s".into()),
        }
    }
    publishing.await.unwrap();
    let received_at = tokio::time::timeout(WAIT, listening)
        .await
        .expect("every live event arrives")
        .unwrap();
    let slow_consumers = nats.slow_consumers().await;
    // Latency of the i-th live event: its arrival minus its publish.
    let mut sent: Vec<(u64, Instant)> = published_at.lock().unwrap().clone().into_iter().collect();
    sent.sort_unstable();
    let worst = sent
        .iter()
        .zip(&received_at)
        .map(|((_, sent), received)| received.saturating_duration_since(*sent))
        .max()
        .unwrap_or_default();
    eprintln!(
        "resume storm: {n_completed}/{N_CLIENTS} clients completed, nats-server slow_consumers {slow_consumers}, worst live latency {worst:?}, test process {}, failures {failures:?}",
        memory()
    );
    assert_eq!(n_completed, N_CLIENTS, "failures: {failures:?}");
    assert_eq!(
        slow_consumers, 0,
        "nats-server cut a connection as a slow consumer"
    );
    assert!(
        worst < Duration::from_secs(5),
        "a live event took {worst:?} during the storm"
    );
}

/// Item 9: a replayed frame larger than half the socket's queue used to wait
/// for room that never came: the client got nothing, and no close.
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_event_larger_than_half_the_queue_is_still_delivered() {
    let nats = NatsServer::start();
    let _publisher = TestPublisher::spawn(&nats).await;
    let edge = TestEdge::spawn_with(herald_edge::Config {
        outbound_queue_bytes: 48 * 1024,
        ..edge_config(&nats, "edge-a")
    })
    .await;
    // ~31 KB: more than half of the 48 KiB queue, less than all of it.
    let seqs = store_many(&nats, &big_event("big", &["u1"], &[], 480), 2).await;
    let url = edge.ws_url(&format!("token={}&since=0", user_token("u1", &[])));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;
    for want in seqs {
        let ServerFrame::Event { seq, .. } = client.next_event().await else {
            unreachable!()
        };
        assert_eq!(seq, want);
    }
}

/// A page bound smaller than one notification still replays everything, a
/// notification at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_bound_below_one_notification_still_replays_everything_in_order() {
    let nats = NatsServer::start();
    let _publisher = TestPublisher::spawn(&nats).await;
    let edge = TestEdge::spawn_with(herald_edge::Config {
        replay_page_bytes: 1024,
        ..edge_config(&nats, "edge-a")
    })
    .await;
    let mut seqs = store_many(&nats, &big_event("big", &["u1"], &[], 100), 3).await;
    seqs.extend(store_many(&nats, &calendar_event("small", &["u1"], &[]), 5).await);
    let url = edge.ws_url(&format!("token={}&since=0", user_token("u1", &[])));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;
    for want in seqs {
        let ServerFrame::Event { seq, .. } = client.next_event().await else {
            unreachable!()
        };
        assert_eq!(seq, want);
    }
}

/// Item 8: when retention has removed every notification of a channel, a
/// cursor below them must still hear `history_truncated`: the channel's last
/// seq reads as 0 then, and the replay used to return as if nothing was due.
#[tokio::test(flavor = "multi_thread")]
async fn a_channel_whose_whole_history_was_discarded_gets_history_truncated() {
    let nats = NatsServer::start();
    let mut config = publisher_config(&nats);
    config.stream.max_bytes = 8 * 1024; // a handful of notifications
    let publisher = TestPublisher::spawn_with(config).await;
    let edge = TestEdge::spawn(&nats, "edge-a").await;
    let token = service_token();
    let lonely = post_event(
        &publisher.url(),
        &token,
        &calendar_event("only-one", &["lonely"], &[]),
    )
    .await;
    assert_eq!(lonely.status, 202);
    let lonely_seq = lonely.body["published"][0]["seq"].as_u64().unwrap();
    // Others' events push the lonely one out of the stream.
    let jetstream = async_nats::jetstream::new(async_nats::connect(&nats.url).await.unwrap());
    let mut stream = jetstream
        .get_stream(herald_shared::stream::NOTIFY_STREAM)
        .await
        .unwrap();
    for i in 0.. {
        if stream.info().await.unwrap().state.first_sequence > lonely_seq {
            break;
        }
        assert!(i < 200, "retention never removed the first notification");
        let answer = post_event(
            &publisher.url(),
            &token,
            &calendar_event(&format!("other-{i}"), &["someone-else"], &[]),
        )
        .await;
        assert_eq!(answer.status, 202);
    }

    let url = edge.ws_url(&format!("token={}&since=0", user_token("lonely", &[])));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;
    let first_seq = stream.info().await.unwrap().state.first_sequence;
    match client.next_frame().await {
        ServerFrame::HistoryTruncated {
            channel,
            first_seq: got,
        } => {
            assert_eq!(channel.to_string(), "user:lonely");
            assert!(got > lonely_seq && got <= first_seq, "first_seq {got}");
        }
        other => panic!("expected history_truncated for user:lonely, got {other:?}"),
    }

    // A cursor at the head of what is stored is not truncated.
    let url = edge.ws_url(&format!(
        "token={}&since={}",
        user_token("lonely", &[]),
        first_seq - 1
    ));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;
    // Both replays have run (the first one ended in history_truncated).
    wait_for(&metrics_url(&edge), "herald_edge_replays_total", &[], |n| {
        n >= 2.0
    })
    .await;
    wait_for(
        &metrics_url(&edge),
        "herald_edge_replays_running",
        &[],
        |n| n == 0.0,
    )
    .await;
    let before_pong = client.round_trip("probe").await;
    assert!(before_pong.is_empty(), "got {before_pong:?}");
}

/// Item 3: `unsubscribe` stops the channel's replay: nothing of the channel
/// arrives after `unsubscribed`, and no replay is left running.
#[tokio::test(flavor = "multi_thread")]
async fn an_unsubscribe_during_a_replay_stops_it() {
    let nats = NatsServer::start();
    let _publisher = TestPublisher::spawn(&nats).await;
    // A small queue: the replay advances only as fast as the client reads.
    let edge = TestEdge::spawn_with(herald_edge::Config {
        outbound_queue_bytes: 16 * 1024,
        ..edge_config(&nats, "edge-a")
    })
    .await;
    store_many(&nats, &big_event("hist", &[], &["hist"], 16), 300).await;
    let url = edge.ws_url(&format!("token={}", user_token("u1", &["hist"])));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;
    client
        .send_json(&json!({ "type": "subscribe", "namespace": "hist", "since": 0 }))
        .await;
    let mut n_events = 0;
    while n_events < 5 {
        match client.next_frame().await {
            ServerFrame::Event { .. } => n_events += 1,
            ServerFrame::Subscribed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    client
        .send_json(&json!({ "type": "unsubscribe", "namespace": "hist" }))
        .await;
    loop {
        match client.next_frame().await {
            ServerFrame::Unsubscribed { .. } => break,
            ServerFrame::Event { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Give a replay that was not stopped the time to queue more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = client.round_trip("after").await;
    assert!(
        after.is_empty(),
        "{} frames after `unsubscribed`, e.g. {:?}",
        after.len(),
        after.first()
    );
    wait_for(
        &metrics_url(&edge),
        "herald_edge_replays_running",
        &[],
        |n| n == 0.0,
    )
    .await;
}

/// Item 3: 20,000 subscribe-with-since/unsubscribe pairs leave no replay
/// behind: what the edge tracks stays bounded by what runs now (the gauge of
/// running replays is back to 0 at the end, and never far from it).
#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_subscribe_with_since_and_unsubscribe_pairs_leave_no_replay_behind() {
    const N_SOCKETS: usize = 10;
    const N_PAIRS: usize = 2_000; // per socket
    let nats = NatsServer::start();
    let _publisher = TestPublisher::spawn(&nats).await;
    let edge = TestEdge::spawn_with(herald_edge::Config {
        client_frames_per_sec: 1_000_000,
        client_frame_burst: 1_000_000,
        ..edge_config(&nats, "edge-a")
    })
    .await;
    let seqs = store_many(&nats, &calendar_event("churn", &[], &["churn"]), 3).await;
    let last = *seqs.last().unwrap();
    // Keeps the channel joined, so each pair costs the edge no NATS round trip.
    let anchor_url = edge.ws_url(&format!(
        "token={}&ns=churn",
        user_token("anchor", &["churn"])
    ));
    let (_anchor, _) = WsClient::connect_welcomed(&anchor_url).await;

    let memory_before = memory();
    let sockets: Vec<_> = (0..N_SOCKETS)
        .map(|i| {
            let url = edge.ws_url(&format!(
                "token={}",
                user_token(&format!("churner-{i}"), &["churn"])
            ));
            tokio::spawn(tokio::time::timeout(Duration::from_secs(60), async move {
                let (mut client, _) = WsClient::connect_welcomed(&url).await;
                for pair in 0..N_PAIRS {
                    // Every tenth resumes from the start, the rest from the head.
                    let since = if pair % 10 == 0 { 0 } else { last };
                    client
                        .send_json(
                            &json!({ "type": "subscribe", "namespace": "churn", "since": since }),
                        )
                        .await;
                    client
                        .send_json(&json!({ "type": "unsubscribe", "namespace": "churn" }))
                        .await;
                    if pair % 100 == 99 {
                        // Read what came back so far; nothing of the channel
                        // may follow an `unsubscribed` before the next `subscribed`.
                        let mut subscribed = false;
                        for frame in client.round_trip(&pair.to_string()).await {
                            match frame {
                                ServerFrame::Subscribed { .. } => subscribed = true,
                                ServerFrame::Unsubscribed { .. } => subscribed = false,
                                ServerFrame::Event { .. } => {
                                    assert!(subscribed, "an event after `unsubscribed`")
                                }
                                other => panic!("unexpected {other:?}"),
                            }
                        }
                    }
                }
                // Kept open: a session's leak lasts as long as its socket.
                client
            }))
        })
        .collect();
    let mut clients = Vec::new();
    let mut most_running = 0.0f64;
    for socket in sockets {
        let mut socket = std::pin::pin!(socket);
        loop {
            tokio::select! {
                done = &mut socket => {
                    clients.push(done.unwrap().expect("2,000 pairs within 60 s"));
                    break;
                }
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    let running = scrape(&metrics_url(&edge)).await.sum("herald_edge_replays_running", &[]);
                    most_running = most_running.max(running);
                }
            }
        }
    }
    eprintln!(
        "20,000 pairs: at most {most_running} replays running at a scrape; test process before {memory_before}, after {}",
        memory()
    );
    for client in clients {
        client.close().await;
    }
    assert!(
        most_running <= (N_SOCKETS + 1) as f64,
        "{most_running} replays running for {N_SOCKETS} sockets"
    );
    wait_for(
        &metrics_url(&edge),
        "herald_edge_replays_running",
        &[],
        |n| n == 0.0,
    )
    .await;
}
