//! The edge's admission limits: `--max-connections-per-user` (WebSocket and
//! SSE together, released when a connection ends) and `--allowed-origins`
//! (HTTP 403 before the upgrade).

use herald_shared::{error_code::ErrorCode, frames::ServerFrame};
use herald_tests::{
    WAIT,
    apps::{TestEdge, TestPublisher, edge_config},
    clients::{WsClient, user_token},
    metrics::wait_for,
    nats::NatsServer,
    sse::SseClient,
};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

/// Opens a WebSocket with this `Origin`; the HTTP status if refused.
async fn ws_with_origin(url: &str, origin: Option<&str>) -> Result<(), u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
    {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(err) => panic!("handshake: {err}"),
    }
}

/// `GET /v1/sse` with this `Origin`: the status.
async fn sse_status(edge: &TestEdge, origin: &str) -> u16 {
    let url = format!(
        "http://{}/v1/sse?token={}",
        edge.addr,
        user_token("alice", &[])
    );
    let response = tokio::time::timeout(
        WAIT,
        reqwest::Client::new()
            .get(url)
            .header("origin", origin)
            .send(),
    )
    .await
    .expect("answer in time")
    .expect("get");
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_past_the_per_user_cap_gets_too_many_connections() {
    let nats = NatsServer::start();
    let _publisher = TestPublisher::spawn(&nats).await;
    let mut config = edge_config(&nats, "edge-a");
    config.max_connections_per_user = Some(2);
    let edge = TestEdge::spawn_with(config).await;
    let base = format!("http://{}", edge.addr);
    let alice = edge.ws_url(&format!("token={}", user_token("alice", &[])));

    // One WebSocket and one SSE stream: the cap counts both.
    let (first, _) = WsClient::connect_welcomed(&alice).await;
    let mut stream = SseClient::connect(
        &format!("{base}/v1/sse?token={}", user_token("alice", &[])),
        None,
    )
    .await;
    assert!(matches!(
        stream.next_event().await.frame,
        ServerFrame::Welcome { .. }
    ));

    let mut third = WsClient::connect(&alice).await;
    let (frames, closed) = third.until_closed().await;
    assert!(
        matches!(
            frames.as_slice(),
            [ServerFrame::Error {
                code: ErrorCode::TooManyConnections,
                ..
            }]
        ),
        "{frames:?}"
    );
    assert_eq!(closed.code, 4005);
    let mut refused = SseClient::connect(
        &format!("{base}/v1/sse?token={}", user_token("alice", &[])),
        None,
    )
    .await;
    assert!(matches!(
        refused.next_event().await.frame,
        ServerFrame::Error {
            code: ErrorCode::TooManyConnections,
            ..
        }
    ));

    // Another user, and a user id that only looks like a pattern, are not counted with alice.
    WsClient::connect_welcomed(&edge.ws_url(&format!("token={}", user_token("bob", &[])))).await;
    WsClient::connect_welcomed(&edge.ws_url(&format!("token={}", user_token("alice.*", &[]))))
        .await;

    // A connection that ends frees its slot (bob's and `alice.*`'s are gone too).
    first.close().await;
    wait_for(
        &base,
        "herald_edge_connections",
        &[("transport", "websocket")],
        |n| n == 0.0,
    )
    .await;
    WsClient::connect_welcomed(&alice).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn origins_not_allowed_get_403_before_the_upgrade() {
    let nats = NatsServer::start();
    let _publisher = TestPublisher::spawn(&nats).await;
    let mut config = edge_config(&nats, "edge-a");
    config.allowed_origins = Some(vec![
        "https://app.example.com".parse().unwrap(),
        "https://*.example.org".parse().unwrap(),
    ]);
    let edge = TestEdge::spawn_with(config).await;
    let url = edge.ws_url(&format!("token={}", user_token("alice", &[])));

    for allowed in [
        Some("https://app.example.com"),
        Some("https://a.b.example.org"),
        None,
    ] {
        assert!(ws_with_origin(&url, allowed).await.is_ok(), "{allowed:?}");
    }
    for refused in [
        "https://evil.example.net",
        "http://app.example.com",
        "https://app.example.com.evil.net",
        "https://example.org",
        "null",
    ] {
        assert_eq!(
            ws_with_origin(&url, Some(refused)).await.err(),
            Some(403),
            "{refused}"
        );
        assert_eq!(sse_status(&edge, refused).await, 403, "{refused}");
    }
    assert_eq!(sse_status(&edge, "https://app.example.com").await, 200);

    // Unset: any origin.
    let open = TestEdge::spawn(&nats, "edge-b").await;
    let url = open.ws_url(&format!("token={}", user_token("alice", &[])));
    assert!(
        ws_with_origin(&url, Some("https://evil.example.net"))
            .await
            .is_ok()
    );
}
