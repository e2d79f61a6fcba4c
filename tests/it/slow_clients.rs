//! Slow and idle HTTP clients, on both services: a connection that sends
//! nothing, half a request line, headers one line at a time, or a body that
//! trickles in is closed within the HTTP timeouts; while stalled
//! connections hold the whole cap on connections not yet admitted, new ones
//! are closed, but a burst of normal clients past the cap waits and is
//! served; a normal client is served meanwhile. And a token with too many
//! namespace grants is refused.

use std::{net::SocketAddr, time::Duration};

use futures_util::future::join_all;
use herald_shared::{config::HttpLimits, error_code::ErrorCode, frames::ServerFrame};
use herald_tests::{
    WAIT,
    apps::{TestEdge, TestPublisher, edge_config, publisher_config},
    clients::{WsClient, calendar_event, post_event, service_token, user_token},
    nats::NatsServer,
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, tcp::OwnedReadHalf},
    task::JoinHandle,
    time::Instant,
};

const HEADER_TIMEOUT: Duration = Duration::from_millis(1_000);
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1_500);
/// How long past its timeout a stalled connection may still be open.
const SLACK: Duration = Duration::from_secs(2);
/// Stalled connections of each kind, per test: hundreds in all, well under
/// the open-file limit (each costs a descriptor on both ends).
const N_PER_KIND: usize = 100;
/// A gap between trickled lines, well under the header timeout.
const TRICKLE: Duration = Duration::from_millis(200);
/// How long the pending cap stays full before new connections are closed
/// (`herald_http::SATURATED_AFTER`).
const SATURATED_AFTER: Duration = Duration::from_secs(1);
/// A normal client is served within this meanwhile.
const QUICKLY: Duration = Duration::from_secs(2);

/// Short timeouts, so stalled connections go within seconds.
fn short_timeouts(max_pending_connections: usize) -> HttpLimits {
    HttpLimits {
        header_timeout: HEADER_TIMEOUT,
        request_timeout: REQUEST_TIMEOUT,
        max_pending_connections,
        ..HttpLimits::default()
    }
}

#[derive(Debug, Clone, Copy)]
enum Stall {
    /// Connects and sends nothing.
    Silent,
    /// Half a request line, then nothing.
    HalfRequestLine,
    /// A request line, then one header line per [`TRICKLE`], never the end.
    TricklingHeaders,
    /// A whole `POST /v1/events` head, then one body byte per [`TRICKLE`].
    TricklingBody,
}

/// A stalled connection: what it reads, and the task that trickles into it;
/// dropping it closes the connection.
struct Stalled {
    read: OwnedReadHalf,
    trickle: JoinHandle<()>,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.trickle.abort();
    }
}

async fn open_stalled(addr: SocketAddr, stall: Stall) -> Stalled {
    let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let (read, mut write) = stream.into_split();
    let trickle = tokio::spawn(async move {
        let (head, line) = match stall {
            Stall::Silent => (String::new(), None),
            Stall::HalfRequestLine => ("GET /v1/ws HT".into(), None),
            Stall::TricklingHeaders => (
                "GET /healthz HTTP/1.1\r\nHost: herald\r\n".into(),
                Some("X-Trickle: 1\r\n"),
            ),
            Stall::TricklingBody => (
                format!(
                    "POST /v1/events HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {}\r\n\
                     Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
                    service_token()
                ),
                Some(" "),
            ),
        };
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let Some(line) = line else {
            // Hold the write half open (dropping it would send FIN).
            std::future::pending::<()>().await;
            return;
        };
        // Until the server closes the connection (or the test ends).
        loop {
            tokio::time::sleep(TRICKLE).await;
            if write.write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    Stalled { read, trickle }
}

/// Opens `n` stalled connections of each kind, all at once.
async fn open_many(addr: SocketAddr, kinds: &[Stall], n: usize) -> Vec<Stalled> {
    let opening = kinds
        .iter()
        .flat_map(|&stall| std::iter::repeat_n(stall, n))
        .map(|stall| open_stalled(addr, stall));
    join_all(opening).await
}

/// Whether the server closes `stalled` by `deadline`: it reads EOF or a
/// reset (anything the server wrote first, such as a 408, is skipped).
async fn closed_by(mut stalled: Stalled, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout_at(deadline, async {
        loop {
            match stalled.read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// How many of `stalled` the server closes by `deadline`.
async fn count_closed(stalled: Vec<Stalled>, deadline: Instant) -> usize {
    join_all(stalled.into_iter().map(|s| closed_by(s, deadline)))
        .await
        .into_iter()
        .filter(|&closed| closed)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_connections_to_the_edge_are_closed_while_a_client_connects() {
    let nats = NatsServer::start();
    let _publisher = TestPublisher::spawn(&nats).await;
    let mut config = edge_config(&nats, "edge-a");
    config.http = short_timeouts(1_000);
    let edge = TestEdge::spawn_with(config).await;

    let kinds = [
        Stall::Silent,
        Stall::HalfRequestLine,
        Stall::TricklingHeaders,
    ];
    let opened = Instant::now();
    let stalled = open_many(edge.addr, &kinds, N_PER_KIND).await;

    // A normal client is welcomed at once meanwhile.
    let url = edge.ws_url(&format!("token={}", user_token("alice", &[])));
    tokio::time::timeout(QUICKLY, WsClient::connect_welcomed(&url))
        .await
        .expect("a normal client is welcomed while stalled connections are open");

    let n_stalled = stalled.len();
    let n_closed = count_closed(stalled, opened + HEADER_TIMEOUT + SLACK).await;
    assert_eq!(
        n_closed,
        n_stalled,
        "stalled connections closed within {:?}",
        HEADER_TIMEOUT + SLACK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_connections_to_the_publisher_are_closed_while_a_client_publishes() {
    let nats = NatsServer::start();
    let mut config = publisher_config(&nats);
    config.http = short_timeouts(1_000);
    let publisher = TestPublisher::spawn_with(config).await;

    let kinds = [
        Stall::Silent,
        Stall::HalfRequestLine,
        Stall::TricklingHeaders,
        Stall::TricklingBody,
    ];
    let opened = Instant::now();
    let stalled = open_many(publisher.addr, &kinds, N_PER_KIND).await;

    // A normal client publishes at once meanwhile.
    let event = calendar_event("slow-clients-1", &["alice"], &[]);
    let answer = tokio::time::timeout(
        QUICKLY,
        post_event(&publisher.url(), &service_token(), &event),
    )
    .await
    .expect("a normal client publishes while stalled connections are open");
    assert_eq!(answer.status, 202, "{:?}", answer.body);

    let n_stalled = stalled.len();
    let n_closed = count_closed(stalled, opened + REQUEST_TIMEOUT + SLACK).await;
    assert_eq!(
        n_closed,
        n_stalled,
        "stalled connections closed within {:?}",
        REQUEST_TIMEOUT + SLACK
    );
}

/// Fills `addr`'s cap of `cap` pending connections with silent ones, then
/// checks that further connections are closed once the cap has stayed full,
/// and that a connection is served again once the silent ones have gone.
async fn check_pending_cap(addr: SocketAddr, cap: usize) {
    // The listener accepts in arrival order: these take every pending slot
    // (and keep them: the header timeout is far off).
    let holding = open_many(addr, &[Stall::Silent], cap).await;
    let extra = open_many(addr, &[Stall::Silent], 20).await;
    let n_closed = count_closed(extra, Instant::now() + SATURATED_AFTER + SLACK).await;
    assert_eq!(
        n_closed, 20,
        "connections past a cap held by stalled ones are closed"
    );
    // While those holding the slots are still open (no EOF, no data).
    let mut buf = [0u8; 64];
    let n_open = holding
        .iter()
        .filter(|stalled| {
            let read = stalled.read.try_read(&mut buf);
            matches!(read, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(n_open, cap, "connections within the cap stay open");

    // Once the stalled clients leave, a request is served again.
    drop(holding);
    let url = format!("http://{addr}/healthz");
    let served = async {
        loop {
            if let Ok(response) = reqwest::get(&url).await
                && response.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, served)
        .await
        .expect("served again once the stalled connections are gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_a_pending_cap_held_by_stalled_ones_are_closed() {
    const CAP: usize = 50;
    let nats = NatsServer::start();
    let mut publisher_config = publisher_config(&nats);
    publisher_config.http = HttpLimits {
        max_pending_connections: CAP,
        ..HttpLimits::default()
    };
    let publisher = TestPublisher::spawn_with(publisher_config).await;
    let mut edge_config = edge_config(&nats, "edge-a");
    edge_config.http = HttpLimits {
        max_pending_connections: CAP,
        ..HttpLimits::default()
    };
    let edge = TestEdge::spawn_with(edge_config).await;

    check_pending_cap(edge.addr, CAP).await;
    check_pending_cap(publisher.addr, CAP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_clients_past_the_pending_cap_waits_for_slots_and_is_served() {
    // A reconnect storm: far more handshakes at once than the cap, none stalled.
    const CAP: usize = 10;
    const BURST: usize = 200;
    let nats = NatsServer::start();
    let _publisher = TestPublisher::spawn(&nats).await;
    let mut config = edge_config(&nats, "edge-a");
    config.http = HttpLimits {
        max_pending_connections: CAP,
        ..HttpLimits::default()
    };
    let edge = TestEdge::spawn_with(config).await;

    let url = edge.ws_url(&format!("token={}", user_token("alice", &[])));
    let connected = join_all((0..BURST).map(|_| WsClient::try_connect(&url))).await;
    let failed: Vec<_> = connected.iter().filter_map(|c| c.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {BURST} failed: {:?}",
        failed.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_head_past_64_kib_is_answered_431_at_once() {
    let nats = NatsServer::start();
    let publisher = TestPublisher::spawn(&nats).await;
    let mut stream = TcpStream::connect(publisher.addr).await.expect("connect");
    // Never finished: without a bound the server would buffer it (and wait).
    let head = format!("GET /healthz HTTP/1.1\r\nX-Big: {}", "x".repeat(100 * 1024));
    // The server may stop reading (and close) before all of it is written.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(SLACK, stream.read_to_end(&mut answer))
        .await
        .expect("the connection is closed at once");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_with_too_many_namespace_grants_is_refused() {
    let nats = NatsServer::start();
    let _publisher = TestPublisher::spawn(&nats).await;
    let mut config = edge_config(&nats, "edge-a");
    config.max_token_grants = 256;
    let edge = TestEdge::spawn_with(config).await;
    let grants = |n: usize| (0..n).map(|i| format!("team-{i}")).collect::<Vec<_>>();
    let token = |n: usize| {
        let grants = grants(n);
        user_token(
            "alice",
            &grants.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };

    // At the handshake: INVALID_TOKEN, then close 4002.
    let mut refused = WsClient::connect(&edge.ws_url(&format!("token={}", token(257)))).await;
    let (frames, closed) = refused.until_closed().await;
    assert!(
        matches!(&frames[..], [ServerFrame::Error { code: ErrorCode::InvalidToken, message, .. }]
            if message.contains("256")),
        "{frames:?}"
    );
    assert_eq!(closed.code, 4002);

    // At the bound, welcomed; a refresh past it is refused, the socket lives on.
    let url = edge.ws_url(&format!("token={}", token(256)));
    let (mut client, _) = WsClient::connect_welcomed(&url).await;
    client
        .send_json(&json!({ "type": "auth", "ref": "a1", "token": token(257) }))
        .await;
    let frames = client.round_trip("after-auth").await;
    assert!(
        matches!(&frames[..], [ServerFrame::Error { code: ErrorCode::InvalidToken, r#ref: Some(r), .. }]
            if r == "a1"),
        "{frames:?}"
    );
}
