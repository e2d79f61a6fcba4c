//! The production edge: heartbeats, rate limits, the connection cap, token
//! lifetime, graceful drain, and slow consumers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use herald_shared::{error_code::ErrorCode, frames::ServerFrame};
use herald_tests::{
    WAIT,
    apps::{Stack, TestEdge, edge_config},
    clients::{TEST_SECRET, WsClient, calendar_event, now, sign, user_claims, user_token},
    nats::NatsServer,
    store::store_many,
};
use serde_json::json;

async fn edge_with(nats: &NatsServer, tweak: impl FnOnce(&mut herald_edge::Config)) -> TestEdge {
    let mut config = edge_config(nats, "edge-a");
    tweak(&mut config);
    TestEdge::spawn_with(config).await
}

/// Waits (bounded) until `f` holds, checking every 20 ms.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn token_expiring_in(sub: &str, ns: &[&str], secs: i64) -> String {
    let mut claims = user_claims(sub, ns);
    claims["exp"] = json!(now() + secs);
    sign(&claims, TEST_SECRET)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_peer_is_dropped_after_two_heartbeats_and_a_live_one_stays() {
    let stack = Stack::start(0).await;
    let edge = edge_with(&stack.nats, |c| c.heartbeat = Duration::from_millis(100)).await;
    let (mut live, _) =
        WsClient::connect_welcomed(&edge.ws_url(&format!("token={}", user_token("live", &[]))))
            .await;
    // Never polled, so it never answers a ping.
    let (_silent, _) =
        WsClient::connect_welcomed(&edge.ws_url(&format!("token={}", user_token("silent", &[]))))
            .await;
    // The live client keeps reading (answering pings) for fifteen intervals.
    let living = tokio::spawn(async move {
        for i in 0..15 {
            live.round_trip(&format!("keepalive-{i}")).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        live
    });

    // The silent socket's resources are freed: its channel's subscription goes.
    eventually("the silent peer's subscription is dropped", async || {
        !stack
            .nats
            .edge_subscriptions()
            .await
            .contains(&"live.user.silent".to_string())
    })
    .await;
    let mut live = tokio::time::timeout(WAIT, living).await.unwrap().unwrap();
    live.round_trip("still-there").await;
    assert!(
        stack
            .nats
            .edge_subscriptions()
            .await
            .contains(&"live.user.live".to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_frames_get_rate_limited_then_closed_with_4029() {
    let stack = Stack::start(0).await;
    let edge = edge_with(&stack.nats, |c| {
        c.client_frames_per_sec = 1;
        c.client_frame_burst = 2;
        c.rate_limit_violations = 3;
    })
    .await;
    let (mut client, _) =
        WsClient::connect_welcomed(&edge.ws_url(&format!("token={}", user_token("u", &[])))).await;

    for i in 0..5 {
        client
            .send_json(&json!({ "type": "ping", "ref": i.to_string() }))
            .await;
    }
    let (frames, closed) = client.until_closed().await;

    let codes: Vec<_> = frames
        .iter()
        .map(|f| match f {
            ServerFrame::Pong { .. } => "pong",
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                ..
            } => "RATE_LIMITED",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            "pong",
            "pong",
            "RATE_LIMITED",
            "RATE_LIMITED",
            "RATE_LIMITED"
        ]
    );
    assert_eq!(closed.code, 4029);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_connection_cap_upgrades_get_http_503() {
    let stack = Stack::start(0).await;
    let edge = edge_with(&stack.nats, |c| c.max_connections = Some(2)).await;
    let url = edge.ws_url(&format!("token={}", user_token("u", &[])));
    let (_first, _) = WsClient::connect_welcomed(&url).await;
    let (_second, _) = WsClient::connect_welcomed(&url).await;

    let refused = WsClient::try_connect(&url).await.unwrap_err();

    assert!(refused.contains("503"), "{refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_expires_without_refresh_closes_with_4003_within_a_second() {
    let stack = Stack::start(1).await;
    let exp = now() + 2;
    let mut claims = user_claims("u", &[]);
    claims["exp"] = json!(exp);
    let url = stack
        .edge()
        .ws_url(&format!("token={}", sign(&claims, TEST_SECRET)));
    let (mut client, welcome) = WsClient::connect_welcomed(&url).await;
    assert!(matches!(welcome, ServerFrame::Welcome { token_exp, .. } if token_exp == exp as u64));

    let (frames, closed) = client.until_closed().await;

    let closed_at = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
    assert!(
        matches!(
            frames.as_slice(),
            [ServerFrame::Error {
                code: ErrorCode::ExpiredToken,
                ..
            }]
        ),
        "{frames:?}"
    );
    assert_eq!(closed.code, 4003);
    assert!(
        closed_at >= exp as f64 - 0.05 && closed_at <= exp as f64 + 1.0,
        "closed at {closed_at}, exp {exp}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auth_frame_refreshes_the_token_on_the_open_socket() {
    let stack = Stack::start(1).await;
    let url = stack.edge().ws_url(&format!(
        "token={}&ns=team-1",
        token_expiring_in("u", &["team-*"], 2)
    ));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;

    // Another user's token is refused; the socket lives on.
    client
        .send_json(
            &json!({ "type": "auth", "ref": "a1", "token": user_token("mallory", &["team-*"]) }),
        )
        .await;
    assert!(matches!(client.next_frame().await,
        ServerFrame::Error { code: ErrorCode::InvalidToken, r#ref: Some(r), .. } if r == "a1"));

    // The same user, a later exp, and a narrower grant: team-1 is left.
    let fresh_exp = now() + 3600;
    let mut fresh = user_claims("u", &["other"]);
    fresh["exp"] = json!(fresh_exp);
    client
        .send_json(&json!({ "type": "auth", "ref": "a2", "token": sign(&fresh, TEST_SECRET) }))
        .await;
    let frames = client.round_trip("after-auth").await;
    assert!(
        matches!(
            &frames[0],
            ServerFrame::Error {
                code: ErrorCode::ForbiddenNamespace,
                ..
            }
        ),
        "{frames:?}"
    );
    assert!(
        matches!(&frames[1], ServerFrame::Unsubscribed { channel, .. } if channel.to_string() == "ns:team-1")
    );
    assert_eq!(
        frames[2],
        ServerFrame::Authenticated {
            r#ref: Some("a2".into()),
            token_exp: fresh_exp as u64
        }
    );

    // Past the first token's exp the socket is still open, and team-1 is gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stack
        .publish(&calendar_event("team-event", &[], &["team-1"]))
        .await;
    stack.publish(&calendar_event("marker", &["u"], &[])).await;
    assert!(
        matches!(client.next_event().await, ServerFrame::Event { id, .. } if id.as_str() == "marker")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_flips_readiness_refuses_upgrades_and_tells_sockets_to_reconnect() {
    let mut stack = Stack::start(1).await;
    let edge_addr = stack.edge().addr;
    let url = stack
        .edge()
        .ws_url(&format!("token={}", user_token("u", &[])));
    let (mut reading, _) = WsClient::connect_welcomed(&url).await;
    // Never polled: it does not answer the close, so the drain waits for it.
    let (_lingering, _) = WsClient::connect_welcomed(&url).await;

    let edge = stack.edges.remove(0);
    let stopped = tokio::spawn(edge.stop());
    let (frames, closed) = reading.until_closed().await;
    assert_eq!(
        frames,
        [ServerFrame::Reconnect {
            reason: "draining".into()
        }]
    );
    assert_eq!(closed.code, 1012);

    let ready = reqwest::get(format!("http://{edge_addr}/readyz"))
        .await
        .unwrap()
        .status();
    assert_eq!(ready, 503, "/readyz during the drain");
    let refused = WsClient::try_connect(&url).await.unwrap_err();
    assert!(
        refused.contains("503"),
        "an upgrade during the drain: {refused}"
    );
    tokio::time::timeout(WAIT, stopped)
        .await
        .unwrap()
        .unwrap()
        .expect("the edge exits cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_that_does_not_read_is_cut_off_and_one_that_reads_gets_everything() {
    const N: usize = 20_000;
    let stack = Stack::start(0).await;
    let edge = edge_with(&stack.nats, |_| {}).await; // the default 1 MiB queue
    let token = user_token("u", &["firehose"]);
    let url = edge.ws_url(&format!("token={token}&ns=firehose"));
    let (mut reader, _) = WsClient::connect_welcomed(&url).await;
    let mut sleeper = WsClient::connect_with_small_receive_buffer(&url, edge.addr).await;

    let progress = Arc::new(AtomicUsize::new(0));
    let reading = tokio::spawn({
        let progress = progress.clone();
        async move {
            let mut seqs = Vec::with_capacity(N);
            while seqs.len() < N {
                match reader.next_frame().await {
                    ServerFrame::Event { seq, .. } => seqs.push(seq),
                    ServerFrame::Error { code, .. } => panic!("the reader got {code}"),
                    _ => {}
                }
                progress.store(seqs.len(), Ordering::Relaxed);
            }
            seqs
        }
    });
    // Stored in bursts of 1000, each once the reader is within 2000 events:
    // as fast as a reading client takes them, whatever this machine's speed.
    let mut stored = Vec::with_capacity(N);
    for burst in 0..N / 1000 {
        let n_stored = stored.len();
        eventually("the reader keeps up", async || {
            progress.load(Ordering::Relaxed) + 2000 >= n_stored
        })
        .await;
        let body = calendar_event(&format!("burst-{burst}"), &[], &["firehose"]);
        stored.extend(store_many(&stack.nats, &body, 1000).await);
    }
    let received = tokio::time::timeout(WAIT * 3, reading)
        .await
        .expect("the reader gets everything")
        .unwrap();
    assert_eq!(
        received, stored,
        "the reader got every event once, in order"
    );

    // The sleeper wakes up: it finds the end of its stream long before the last event.
    let mut n_events = 0;
    let ended = loop {
        match tokio::time::timeout(WAIT, sleeper.try_next_frame())
            .await
            .expect("the stream ends")
        {
            Ok(ServerFrame::Event { .. }) => n_events += 1,
            Ok(ServerFrame::Error { code, .. }) => assert_eq!(code, ErrorCode::SlowConsumer),
            Ok(_) => {}
            Err(ended) => break ended,
        }
    };
    eprintln!(
        "slow consumer: the reader got {} of {N}; the sleeper was cut off after {n_events} ({ended})",
        received.len()
    );
    assert!(
        n_events < N / 2,
        "the sleeper was cut off early, after {n_events} events (ended: {ended})"
    );
    assert!(
        !ended.contains("closed") || ended.contains("4008"),
        "a close, if any, is 4008: {ended}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listen_backlog_holds_a_reconnect_storm() {
    // Nobody accepts: every connection must wait in the kernel's accept queue.
    // With tokio's default backlog (128) the 130th SYN would go unanswered.
    const STORM: usize = 600;
    let listener = herald_shared::net::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut connected = Vec::with_capacity(STORM);
    for _ in 0..STORM {
        let stream = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .expect("the handshake completes: the backlog has room")
        .unwrap();
        connected.push(stream);
    }
    assert_eq!(connected.len(), STORM);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_publisher_finishes_the_request_in_flight_and_takes_no_new_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let nats = NatsServer::start();
    let publisher = herald_tests::apps::TestPublisher::spawn(&nats).await;
    let addr = publisher.addr;
    let body = calendar_event("in-flight", &["u1"], &[]).to_string();

    // `Expect: 100-continue`: the server answers `100 Continue` once the handler
    // runs and asks for the body, so the request is provably in flight.
    let mut connection = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        herald_tests::clients::service_token(),
        body.len()
    );
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(WAIT, connection.read_exact(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");

    let stopped = tokio::spawn(publisher.stop());
    eventually("new connections are refused", async || {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    connection.write_all(body.as_bytes()).await.unwrap();

    let mut response = Vec::new();
    tokio::time::timeout(WAIT, connection.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    tokio::time::timeout(WAIT, stopped)
        .await
        .unwrap()
        .unwrap()
        .expect("the publisher exits cleanly");
}
