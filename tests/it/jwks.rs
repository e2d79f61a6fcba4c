//! `--jwks-url`: keys from an identity provider's JWKS endpoint (a real local
//! HTTP server the test rotates), followed without a restart, protected from
//! floods of made-up kids, and kept while the provider is down.

use futures_util::StreamExt as _;
use herald_shared::{
    error_code::ErrorCode,
    frames::ServerFrame,
    jwks::{JwksPolicy, Keys},
    jwt::KeySet,
};
use herald_tests::{
    WAIT,
    apps::{TestEdge, TestPublisher, edge_config, publisher_config},
    clients::{WsClient, calendar_event, post_event, service_claims, user_claims},
    jwks::{JwksServer, TestKey, until_dropped},
    metrics::{scrape, wait_for},
    nats::NatsServer,
};

/// Connects with `token` and expects one error frame with `code`, then `close`.
async fn expect_refusal(edge: &TestEdge, token: &str, code: ErrorCode, close: u16) {
    let mut client = WsClient::connect(&edge.ws_url(&format!("token={token}"))).await;
    let (frames, closed) = client.until_closed().await;
    assert!(
        matches!(frames.as_slice(), [ServerFrame::Error { code: got, .. }] if *got == code),
        "{frames:?}"
    );
    assert_eq!(closed.code, close);
}

async fn readyz(addr: std::net::SocketAddr) -> u16 {
    let url = format!("http://{addr}/readyz");
    tokio::time::timeout(WAIT, reqwest::get(&url))
        .await
        .expect("/readyz answers in time")
        .expect("GET /readyz")
        .status()
        .as_u16()
}

/// A free port on 127.0.0.1, to know the edge's address before it is ready.
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_follows_the_providers_keys_and_keeps_them_while_it_is_down() {
    let provider = JwksServer::start(&[(TestKey::Ec, "a")]).await;
    provider.cache_control(Some("public, max-age=1"));
    provider.set_down(true);
    let nats = NatsServer::start();
    let _publisher = TestPublisher::spawn(&nats).await;
    let mut config = edge_config(&nats, "edge-a");
    config.listen = free_addr();
    // max-age=1 is kept as is (the floor is lowered for the test); failed
    // fetches are retried within 50 ms.
    config.keys = provider.keys();
    let keys = config.keys.clone();
    let addr = config.listen;
    let edge = tokio::spawn(TestEdge::spawn_with(config));

    // Until the provider has answered once, the edge is not ready.
    provider.wait_for_requests(2).await;
    assert_eq!(readyz(addr).await, 503);
    provider.set_down(false);
    let edge = tokio::time::timeout(WAIT, edge)
        .await
        .expect("the edge gets ready once the provider answers")
        .unwrap();
    let url = |token: &str| edge.ws_url(&format!("token={token}"));
    let claims = user_claims("alice", &[]);
    let token_a = TestKey::Ec.sign("a", &claims);
    let token_b = TestKey::Rsa.sign("b", &claims);
    let (mut socket, _) = WsClient::connect_welcomed(&url(&token_a)).await;

    // A key the provider adds works at once, in an `auth` refresh as at
    // connect: its unknown kid fetches the set.
    provider.serve_keys(&[(TestKey::Ec, "a"), (TestKey::Rsa, "b")]);
    socket
        .send_json(&serde_json::json!({ "type": "auth", "ref": "r1", "token": token_b }))
        .await;
    let answer = socket.next_frame().await;
    assert!(
        matches!(&answer, ServerFrame::Authenticated { r#ref: Some(r), .. } if r == "r1"),
        "{answer:?}"
    );
    WsClient::connect_welcomed(&url(&token_b)).await;

    // A key the provider removes is refused after the next refresh.
    provider.serve_keys(&[(TestKey::Rsa, "b")]);
    until_dropped(&keys, "a").await;
    expect_refusal(&edge, &token_a, ErrorCode::InvalidToken, 4002).await;

    // The provider goes down: the last good keys stay in use.
    let base = format!("http://{}", edge.addr);
    let fetches = "herald_edge_jwks_fetches_total";
    provider.set_down(true);
    wait_for(&base, fetches, &[("result", "unavailable")], |n| n >= 2.0).await;
    WsClient::connect_welcomed(&url(&token_b)).await;
    // It answers with no usable key: the same.
    provider.serve_keys(&[]);
    provider.set_down(false);
    wait_for(&base, fetches, &[("result", "invalid")], |n| n >= 1.0).await;
    WsClient::connect_welcomed(&url(&token_b)).await;
    let scraped = scrape(&base).await;
    assert!(
        scraped.sum(fetches, &[("result", "ok")]) >= 3.0,
        "{}",
        scraped.text
    );
    assert_eq!(scraped.sum("herald_edge_jwks_keys", &[]), 1.0);
    assert_eq!(readyz(edge.addr).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_made_up_kids_reaches_the_provider_once() {
    let provider = JwksServer::start(&[(TestKey::Ec, "a")]).await;
    let nats = NatsServer::start();
    let mut config = publisher_config(&nats);
    // The documented policy: at most one fetch per 30 s for unknown kids.
    config.keys =
        Keys::with_jwks_url(KeySet::default(), &provider.url, JwksPolicy::default()).unwrap();
    let publisher = TestPublisher::spawn_with(config).await;
    let url = publisher.url();
    assert_eq!(provider.requests(), 1, "the fetch at start");

    let event = calendar_event("evt-jwks", &["alice"], &[]);
    let statuses: Vec<u16> = futures_util::stream::iter(0..1000)
        .map(|i| {
            let token = TestKey::Ec.sign(&format!("made-up-{i}"), &service_claims());
            let (url, event) = (&url, &event);
            async move { post_event(url, &token, event).await.status }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    assert_eq!(provider.requests(), 2, "one fetch for 1,000 unknown kids");

    // A known kid still works, and costs no fetch.
    let answer = post_event(&url, &TestKey::Ec.sign("a", &service_claims()), &event).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert_eq!(provider.requests(), 2);
    let scraped = scrape(&url).await;
    assert_eq!(
        scraped.sum("herald_publisher_jwks_fetches_total", &[("result", "ok")]),
        2.0,
        "{}",
        scraped.text
    );
    assert_eq!(scraped.sum("herald_publisher_jwks_keys", &[]), 1.0);
}
