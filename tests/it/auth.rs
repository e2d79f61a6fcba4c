//! The handshake's refusals and every close code the edge sends.

use herald_shared::{error_code::ErrorCode, frames::ServerFrame};
use herald_tests::{
    apps::{Stack, TestEdge, TestPublisher, edge_config},
    clients::{Closed, TEST_SECRET, WsClient, now, sign, user_claims, user_token},
    nats::NatsServer,
};
use serde_json::json;

/// Connects with `query` and expects one error frame with `code`, then `close`.
async fn expect_refusal(stack: &Stack, query: &str, code: ErrorCode, close: u16) {
    let mut client = WsClient::connect(&stack.edge().ws_url(query)).await;
    let (frames, closed) = client.until_closed().await;
    assert_eq!(frames.len(), 1, "{query}: {frames:?}");
    assert!(
        matches!(&frames[0], ServerFrame::Error { code: got, .. } if *got == code),
        "{query}: {frames:?}"
    );
    assert_eq!(closed.code, close, "{query}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_get_an_error_frame_and_their_close_code() {
    let stack = Stack::start(1).await;
    let token = |claims: serde_json::Value| sign(&claims, TEST_SECRET);
    let mut expired = user_claims("u", &[]);
    expired["exp"] = json!(now() - 5);
    let mut not_yet = user_claims("u", &[]);
    not_yet["nbf"] = json!(now() + 600);
    let mut wrong_audience = user_claims("u", &[]);
    wrong_audience["aud"] = json!("herald-publisher");
    let mut control_sub = user_claims("u", &[]);
    control_sub["sub"] = json!("bad\u{7}id");
    let alg_none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        user_token("u", &[]).split('.').nth(1).unwrap()
    );

    expect_refusal(&stack, "", ErrorCode::MissingToken, 4001).await;
    expect_refusal(&stack, "token=", ErrorCode::MissingToken, 4001).await;
    for bad in [
        "garbage".to_string(),
        sign(&user_claims("u", &[]), "another-secret"),
        token(wrong_audience),
        token(not_yet),
        token(control_sub),
        alg_none,
    ] {
        expect_refusal(
            &stack,
            &format!("token={bad}"),
            ErrorCode::InvalidToken,
            4002,
        )
        .await;
    }
    expect_refusal(
        &stack,
        &format!("token={}", token(expired)),
        ErrorCode::ExpiredToken,
        4003,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connect_whose_namespaces_are_all_refused_closes_with_4004() {
    let stack = Stack::start(1).await;
    let token = user_token("u", &["team-*"]);
    expect_refusal(
        &stack,
        &format!("token={token}&ns=admins,ops"),
        ErrorCode::ForbiddenNamespace,
        4004,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partly_refused_connect_lives_on_with_an_error_per_refused_namespace() {
    let stack = Stack::start(1).await;
    let token = user_token("u", &["team-*"]);
    let (mut client, welcome) = WsClient::connect_welcomed(
        &stack
            .edge()
            .ws_url(&format!("token={token}&ns=team-1,admins")),
    )
    .await;

    let ServerFrame::Welcome { channels, .. } = welcome else {
        unreachable!()
    };
    assert_eq!(
        channels.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["user:u", "ns:team-1"]
    );
    let notices = client.round_trip("after-welcome").await;
    assert!(
        matches!(
            notices.as_slice(),
            [ServerFrame::Error {
                code: ErrorCode::ForbiddenNamespace,
                ..
            }]
        ),
        "{notices:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_may_come_in_the_authorization_header() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let stack = Stack::start(1).await;
    let mut request = stack.edge().ws_url("").into_client_request().unwrap();
    let bearer = format!("Bearer {}", user_token("header-user", &[]));
    request
        .headers_mut()
        .insert("authorization", bearer.parse().unwrap());

    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    use futures_util::StreamExt;
    let message = socket.next().await.unwrap().unwrap();
    let welcome: ServerFrame = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert!(matches!(welcome, ServerFrame::Welcome { user, .. } if user.as_str() == "header-user"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frame_over_16_kib_closes_with_1009() {
    let stack = Stack::start(1).await;
    let (mut client, _) = stack.edge().connect_as("u", &[]).await;

    client
        .send_text(&format!(
            r#"{{"type":"ping","ref":"{}"}}"#,
            "x".repeat(16 * 1024)
        ))
        .await;

    let (_, closed) = client.until_closed().await;
    assert_eq!(closed.code, 1009);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_edge_sends_reconnect_then_closes_with_1012() {
    let mut stack = Stack::start(1).await;
    let (mut client, _) = stack.edge().connect_as("u", &[]).await;

    let edge = stack.edges.remove(0);
    let stopped = tokio::spawn(edge.stop());
    let (frames, closed) = client.until_closed().await;

    assert_eq!(
        frames,
        [ServerFrame::Reconnect {
            reason: "draining".into()
        }]
    );
    assert_eq!(
        closed,
        Closed {
            code: 1012,
            reason: "draining".into()
        }
    );
    stopped.await.unwrap().expect("the edge stops cleanly");
}

/// With `--jwt-issuer` set, a token must name that issuer: one without any
/// `iss` is refused at connect and in an `auth` refresh.
#[tokio::test(flavor = "multi_thread")]
async fn with_an_issuer_configured_a_token_without_iss_is_refused_at_connect_and_on_refresh() {
    const ISSUER: &str = "https://issuer.example";
    let nats = NatsServer::start();
    let mut config = edge_config(&nats, "edge-a");
    config.expect.issuer = Some(ISSUER.into());
    let stack = Stack {
        publisher: TestPublisher::spawn(&nats).await,
        edges: vec![TestEdge::spawn_with(config).await],
        nats,
    };
    let without_iss = sign(&user_claims("u", &[]), TEST_SECRET);
    let mut with_iss = user_claims("u", &[]);
    with_iss["iss"] = json!(ISSUER);
    let with_iss = sign(&with_iss, TEST_SECRET);

    expect_refusal(
        &stack,
        &format!("token={without_iss}"),
        ErrorCode::InvalidToken,
        4002,
    )
    .await;

    let (mut client, _) =
        WsClient::connect_welcomed(&stack.edge().ws_url(&format!("token={with_iss}"))).await;
    client
        .send_json(&json!({ "type": "auth", "ref": "a1", "token": without_iss }))
        .await;
    client
        .send_json(&json!({ "type": "auth", "ref": "a2", "token": with_iss }))
        .await;
    let frames = client.round_trip("after-auth").await;
    assert!(
        matches!(&frames[..], [
            ServerFrame::Error { code: ErrorCode::InvalidToken, r#ref: Some(a1), .. },
            ServerFrame::Authenticated { r#ref: Some(a2), .. },
        ] if a1 == "a1" && a2 == "a2"),
        "{frames:?}"
    );
}
