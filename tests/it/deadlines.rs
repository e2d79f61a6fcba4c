//! A connection's deadlines hold while a write to it is pending: token `exp`,
//! two silent heartbeats, the write timeout; on WebSocket and SSE alike. And
//! an absurd `exp` neither panics a session nor leaks what it joined.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_shared::frames::ServerFrame;
use herald_tests::{
    WAIT,
    apps::{Stack, TestEdge, edge_config},
    clients::{TEST_SECRET, WsClient, calendar_event, now, sign, user_claims, user_token},
    metrics::{scrape, wait_for},
    sse::{SseClient, SseItem, open_unread, read_until_quiet},
    store::store_many,
};
use serde_json::json;
use tokio::time::Instant;

/// What the unread sockets are sent: three notifications of ~60 KB, more
/// than the edge's capped send buffer and the client's 1 KiB window hold.
const BIG_EVENTS: usize = 3;
const BIG_EVENT_BYTES: usize = 60_000;
/// The tests' clients' kernel receive buffer.
const TINY_RECEIVE_BUFFER: u32 = 1024;
/// How a test reads "everything the socket got" after the fact.
const QUIET: Duration = Duration::from_millis(500);

fn token_with_exp(sub: &str, ns: &[&str], exp: serde_json::Value) -> String {
    let mut claims = user_claims(sub, ns);
    claims["exp"] = exp;
    sign(&claims, TEST_SECRET)
}

/// A valid event to `user` of about `bytes` (its attendee list: the one
/// field of a calendar event that can be that long).
fn big_event(id: &str, user: &str, bytes: usize) -> serde_json::Value {
    let mut body = calendar_event(id, &[user], &[]);
    // At most 1000 attendees, each id with two quotes and a comma.
    let n = (bytes / 60).clamp(1, 1000);
    let attendees: Vec<String> = (0..n)
        .map(|i| format!("a{i:04}{}", "x".repeat(bytes / n - 8)))
        .collect();
    body["data"]["attendees"] = json!(attendees);
    body
}

/// The tokio instant of a Unix time in seconds.
fn instant_of_unix(secs: i64) -> Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Instant::now() + Duration::from_secs(secs as u64).saturating_sub(now)
}

/// Scrapes the edge's open connections of `transport` until they are `n`:
/// when it saw that, or `None` if they still were not at `deadline`.
async fn connections_reach(
    edge: &TestEdge,
    transport: &str,
    n: f64,
    deadline: Instant,
) -> Option<Instant> {
    let base = format!("http://{}", edge.addr);
    loop {
        let open = scrape(&base)
            .await
            .sum("herald_edge_connections", &[("transport", transport)]);
        if open == n {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until the edge counts one open connection of `transport`.
async fn connected(edge: &TestEdge, transport: &str) {
    let base = format!("http://{}", edge.addr);
    wait_for(
        &base,
        "herald_edge_connections",
        &[("transport", transport)],
        |n| n == 1.0,
    )
    .await;
}

async fn edge_with(stack: &Stack, tweak: impl FnOnce(&mut herald_edge::Config)) -> TestEdge {
    let mut config = edge_config(&stack.nats, "edge-d");
    tweak(&mut config);
    TestEdge::spawn_with(config).await
}

fn event_ids(frames: &[ServerFrame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|frame| match frame {
            ServerFrame::Event { id, .. } => Some(id.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_that_stops_reading_is_closed_at_exp_and_gets_nothing_published_after() {
    let stack = Stack::start(1).await;
    let edge = stack.edge();
    let exp = now() + 3;
    let token = token_with_exp("stuck", &[], json!(exp));
    let url = edge.ws_url(&format!("token={token}"));
    let mut client =
        WsClient::connect_with_receive_buffer(&url, edge.addr, TINY_RECEIVE_BUFFER).await;
    connected(edge, "websocket").await;
    // Before `exp`: enough to leave a write to the socket pending.
    store_many(
        &stack.nats,
        &big_event("before-exp", "stuck", BIG_EVENT_BYTES),
        BIG_EVENTS,
    )
    .await;

    let expires = instant_of_unix(exp);
    tokio::time::sleep_until(expires + Duration::from_millis(200)).await;
    store_many(
        &stack.nats,
        &calendar_event("after-exp", &["stuck"], &[]),
        1,
    )
    .await;
    let dropped = connections_reach(edge, "websocket", 0.0, expires + Duration::from_secs(1)).await;
    eprintln!(
        "stuck WebSocket dropped {:?} after exp",
        dropped.map(|at| at - expires)
    );

    // The client reads again: what did it get?
    let frames = client.frames_until_end(QUIET).await;
    let ids = event_ids(&frames);
    let after_exp = ids.iter().filter(|id| *id != "before-exp").count();
    assert!(
        dropped.is_some() && after_exp == 0,
        "dropped by exp + 1 s: {}; events written after `exp`: {after_exp} (of {ids:?})",
        dropped.is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_socket_with_a_pending_write_is_dropped_within_two_heartbeats() {
    let stack = Stack::start(0).await;
    let heartbeat = Duration::from_millis(300);
    let edge = edge_with(&stack, |c| c.heartbeat = heartbeat).await;
    let url = edge.ws_url(&format!("token={}", user_token("silent", &[])));
    let _client = WsClient::connect_with_receive_buffer(&url, edge.addr, TINY_RECEIVE_BUFFER).await;
    // The session hears the client last at its start, just before this.
    connected(&edge, "websocket").await;
    let heard = Instant::now();
    store_many(
        &stack.nats,
        &big_event("e", "silent", BIG_EVENT_BYTES),
        BIG_EVENTS,
    )
    .await;

    let bound = heard + heartbeat * 2 + Duration::from_millis(700);
    let dropped = connections_reach(&edge, "websocket", 0.0, bound).await;
    eprintln!(
        "silent socket dropped {:?} after it was last heard (heartbeat {heartbeat:?})",
        dropped.map(|at| at - heard)
    );
    assert!(
        dropped.is_some(),
        "a silent socket with a pending write outlived two heartbeats"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_pending_longer_than_the_write_timeout_drops_a_chatty_socket() {
    let stack = Stack::start(0).await;
    let write_timeout = Duration::from_millis(500);
    let edge = edge_with(&stack, |c| c.write_timeout = write_timeout).await;
    let url = edge.ws_url(&format!("token={}", user_token("chatty", &[])));
    let mut client =
        WsClient::connect_with_receive_buffer(&url, edge.addr, TINY_RECEIVE_BUFFER).await;
    connected(&edge, "websocket").await;
    let stored = Instant::now();
    store_many(
        &stack.nats,
        &big_event("e", "chatty", BIG_EVENT_BYTES),
        BIG_EVENTS,
    )
    .await;
    // It keeps talking (so it is never silent) but never reads.
    let bound = stored + write_timeout + Duration::from_secs(1);
    let dropped = async {
        let mut i = 0;
        while connections_reach(&edge, "websocket", 0.0, Instant::now())
            .await
            .is_none()
        {
            client
                .send_json(&json!({ "type": "ping", "ref": i.to_string() }))
                .await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(
        tokio::time::timeout_at(bound, dropped).await.is_ok(),
        "a socket whose write stayed pending outlived the write timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sse_stream_that_stops_reading_ends_at_exp_and_gets_nothing_published_after() {
    let stack = Stack::start(1).await;
    let edge = stack.edge();
    let exp = now() + 3;
    let token = token_with_exp("stuck", &[], json!(exp));
    let mut socket = open_unread(
        edge.addr,
        &format!("/v1/sse?token={token}"),
        TINY_RECEIVE_BUFFER,
    )
    .await;
    connected(edge, "sse").await;
    // More than hyper's write buffer and the body channel take: the
    // session's own write waits. Under the 1 MiB queue bound.
    store_many(&stack.nats, &big_event("before-exp", "stuck", 20_000), 45).await;

    let expires = instant_of_unix(exp);
    tokio::time::sleep_until(expires + Duration::from_millis(200)).await;
    store_many(
        &stack.nats,
        &calendar_event("after-exp", &["stuck"], &[]),
        1,
    )
    .await;
    let dropped = connections_reach(edge, "sse", 0.0, expires + Duration::from_secs(1)).await;
    eprintln!(
        "stuck SSE stream ended {:?} after exp",
        dropped.map(|at| at - expires)
    );

    let got = String::from_utf8_lossy(&read_until_quiet(&mut socket, QUIET).await).into_owned();
    assert!(got.contains("before-exp"), "the stream delivered nothing");
    let after_exp = got.contains("after-exp");
    assert!(
        dropped.is_some() && !after_exp,
        "ended by exp + 1 s: {}; written after `exp`: {after_exp}",
        dropped.is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_exp_near_u64_max_works_and_leaves_no_subscription_behind() {
    let stack = Stack::start(1).await;
    let edge = stack.edge();
    let far = json!(u64::MAX);

    // At connect.
    let url = edge.ws_url(&format!(
        "token={}&ns=team-far",
        token_with_exp("far", &["team-*"], far.clone())
    ));
    let mut at_connect = WsClient::connect(&url).await;
    let first = tokio::time::timeout(WAIT, at_connect.try_next_frame())
        .await
        .expect("a frame or the end in time");
    let welcomed = matches!(first, Ok(ServerFrame::Welcome { .. }));

    // On an SSE stream.
    let url = format!(
        "http://{}/v1/sse?token={}&ns=team-sse",
        edge.addr,
        token_with_exp("sse", &["team-*"], far.clone())
    );
    let mut sse = SseClient::connect(&url, None).await;
    let sse_first = sse.next().await;
    let sse_welcomed = matches!(
        &sse_first,
        SseItem::Event(event) if matches!(event.frame, ServerFrame::Welcome { .. })
    );
    drop(sse);

    // In an `auth` refresh.
    let url = edge.ws_url(&format!(
        "token={}&ns=team-refresh",
        user_token("refresh", &["team-*"])
    ));
    let (mut refreshed, _) = WsClient::connect_welcomed(&url).await;
    refreshed
        .send_json(&json!({ "type": "auth", "ref": "far", "token": token_with_exp("refresh", &["team-*"], far) }))
        .await;
    let answer = tokio::time::timeout(WAIT, refreshed.try_next_frame())
        .await
        .expect("a frame or the end in time");
    let authenticated = matches!(answer, Ok(ServerFrame::Authenticated { .. }));

    // Both sessions work: an event reaches each, then they close.
    if welcomed && authenticated {
        stack
            .publish(&calendar_event("to-both", &["far", "refresh"], &[]))
            .await;
        for client in [&mut at_connect, &mut refreshed] {
            assert!(
                matches!(client.next_event().await, ServerFrame::Event { id, .. } if id.to_string() == "to-both")
            );
            client.round_trip("still-there").await;
        }
    }
    at_connect.close().await;
    refreshed.close().await;

    let deadline = Instant::now() + Duration::from_secs(3);
    let leftover = loop {
        let live: Vec<String> = stack
            .nats
            .edge_subscriptions()
            .await
            .into_iter()
            .filter(|s| s.starts_with("live."))
            .collect();
        if live.is_empty() || Instant::now() >= deadline {
            break live;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        welcomed && sse_welcomed && authenticated && leftover.is_empty(),
        "connect with a far `exp`: {first:?}; SSE: {sse_first:?}; `auth` with one: {answer:?}; \
         subscriptions left after the sockets closed: {leftover:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_sse_connection_is_closed_after_its_session_ended() {
    let stack = Stack::start(0).await;
    let http_write_timeout = Duration::from_secs(1);
    let edge = edge_with(&stack, |c| {
        c.write_timeout = Duration::from_millis(500);
        c.http.write_timeout = http_write_timeout;
        // Far longer than the test: only the write timeout can close it in time.
        c.http.header_timeout = Duration::from_secs(120);
    })
    .await;
    let token = user_token("stuck-sse", &[]);
    let mut socket = open_unread(
        edge.addr,
        &format!("/v1/sse?token={token}"),
        TINY_RECEIVE_BUFFER,
    )
    .await;
    connected(&edge, "sse").await;
    store_many(&stack.nats, &big_event("e", "stuck-sse", 20_000), 45).await;
    let ended = connections_reach(&edge, "sse", 0.0, Instant::now() + WAIT).await;
    assert!(ended.is_some(), "the stuck SSE session never ended");

    // Nothing shows the server's side of the socket without reading it, and
    // reading would unblock the write: give the write timeout its time first.
    tokio::time::sleep(http_write_timeout + Duration::from_millis(500)).await;
    // What the kernel still holds arrives, then the end. Without the write
    // timeout the response completes once read, and the connection waits for
    // the next request (the header timeout, two minutes here).
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt as _;
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(1..) = socket.read(&mut buffer).await {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection of an ended SSE session stayed open"
    );
}
