//! Client frames: ping, subscribe, unsubscribe, and bad frames that leave
//! the connection alive.

use herald_shared::{error_code::ErrorCode, frames::ServerFrame};
use herald_tests::{
    apps::{Stack, TestEdge, edge_config},
    clients::calendar_event,
};
use serde_json::json;

fn error_code(frame: &ServerFrame) -> (ErrorCode, Option<String>) {
    match frame {
        ServerFrame::Error { code, r#ref, .. } => (*code, r#ref.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frames_get_their_error_code_and_the_socket_lives_on() {
    let stack = Stack::start(1).await;
    let (mut client, _) = stack.edge().connect_as("u", &[]).await;

    client.send_text("not json").await;
    assert_eq!(
        error_code(&client.next_frame().await),
        (ErrorCode::MalformedFrame, None)
    );
    client.send_json(&json!({ "ref": "1" })).await;
    assert_eq!(
        error_code(&client.next_frame().await),
        (ErrorCode::MalformedFrame, Some("1".into()))
    );
    client
        .send_json(&json!({ "type": "dance", "ref": "2" }))
        .await;
    assert_eq!(
        error_code(&client.next_frame().await),
        (ErrorCode::UnknownFrame, Some("2".into()))
    );
    client
        .send_json(&json!({ "type": "subscribe", "ref": "3" }))
        .await;
    assert_eq!(
        error_code(&client.next_frame().await),
        (ErrorCode::ValidationFailed, Some("3".into()))
    );
    client.send_binary(b"{}".to_vec()).await;
    assert_eq!(
        error_code(&client.next_frame().await),
        (ErrorCode::MalformedFrame, None)
    );

    client
        .send_json(&json!({ "type": "ping", "ref": "4" }))
        .await;
    assert_eq!(
        client.next_frame().await,
        ServerFrame::Pong {
            r#ref: Some("4".into())
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_reports_the_latest_seq_then_delivers_until_unsubscribe() {
    let stack = Stack::start(1).await;
    stack
        .publish(&calendar_event("before-1", &[], &["team-42"]))
        .await;
    let before = stack
        .publish(&calendar_event("before-2", &[], &["team-42"]))
        .await;
    let (mut client, _) = stack.edge().connect_as("u", &["team-*"]).await;

    client
        .send_json(&json!({ "type": "subscribe", "ref": "s", "namespace": "team-42" }))
        .await;
    let subscribed = client.next_frame().await;
    assert_eq!(
        subscribed,
        ServerFrame::Subscribed {
            r#ref: Some("s".into()),
            channel: "ns:team-42".parse().unwrap(),
            seq: before.published[0].seq
        }
    );
    stack
        .publish(&calendar_event("live", &[], &["team-42"]))
        .await;
    assert!(
        matches!(client.next_event().await, ServerFrame::Event { id, .. } if id.as_str() == "live")
    );

    client
        .send_json(&json!({ "type": "unsubscribe", "ref": "u", "namespace": "team-42" }))
        .await;
    assert!(
        matches!(client.next_frame().await, ServerFrame::Unsubscribed { r#ref: Some(r), .. } if r == "u")
    );
    stack
        .publish(&calendar_event("after-unsubscribe", &[], &["team-42"]))
        .await;
    stack.publish(&calendar_event("marker", &["u"], &[])).await;
    assert!(
        matches!(client.next_event().await, ServerFrame::Event { id, .. } if id.as_str() == "marker"),
        "an event of a left namespace was delivered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_refuses_namespaces_the_token_does_not_allow_and_caps_the_count() {
    let stack = Stack::start(0).await;
    let edge = TestEdge::spawn_with(herald_edge::Config {
        max_namespaces_per_socket: 2,
        ..edge_config(&stack.nats, "edge-capped")
    })
    .await;
    let (mut client, _) = edge.connect_as("u", &["team-*"]).await;

    client
        .send_json(&json!({ "type": "subscribe", "ref": "1", "namespace": "admins" }))
        .await;
    assert_eq!(
        error_code(&client.next_frame().await),
        (ErrorCode::ForbiddenNamespace, Some("1".into()))
    );
    for (r, ns) in [("2", "team-1"), ("3", "team-2")] {
        client
            .send_json(&json!({ "type": "subscribe", "ref": r, "namespace": ns }))
            .await;
        assert!(matches!(
            client.next_frame().await,
            ServerFrame::Subscribed { .. }
        ));
    }
    client
        .send_json(&json!({ "type": "subscribe", "ref": "4", "namespace": "team-3" }))
        .await;
    assert_eq!(
        error_code(&client.next_frame().await),
        (ErrorCode::TooManySubscriptions, Some("4".into()))
    );
}
