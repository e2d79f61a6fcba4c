//! `GET /v1/sse`: delivery, the resume cursor in `id`, heartbeats, refusals.

use std::time::Duration;

use herald_shared::{error_code::ErrorCode, frames::ServerFrame};
use herald_tests::{
    apps::{Stack, TestEdge, edge_config},
    clients::{calendar_event, user_token},
    sse::{SseClient, SseItem},
};

fn event_id(frame: &ServerFrame) -> String {
    match frame {
        ServerFrame::Event { id, .. } => id.to_string(),
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_delivers_events_with_a_resume_cursor_and_resumes_from_last_event_id() {
    let stack = Stack::start(2).await;
    let token = user_token("u1", &["team-*"]);
    let url = |edge: usize| {
        format!(
            "http://{}/v1/sse?token={token}&ns=team-1",
            stack.edges[edge].addr
        )
    };
    let mut stream = SseClient::connect(&url(0), None).await;
    assert_eq!(stream.status, 200);
    let welcome = stream.next_event().await;
    let ServerFrame::Welcome {
        epoch, channels, ..
    } = welcome.frame
    else {
        panic!("welcome first")
    };
    assert_eq!(
        channels.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["user:u1", "ns:team-1"]
    );

    let to_user = stack
        .publish(&calendar_event("to-user", &["u1"], &[]))
        .await
        .published[0]
        .seq;
    let to_team = stack
        .publish(&calendar_event("to-team", &[], &["team-1"]))
        .await
        .published[0]
        .seq;
    let first = stream.next_event().await;
    assert_eq!(event_id(&first.frame), "to-user");
    assert_eq!(
        first.id.as_deref(),
        Some(format!("{epoch}/{to_user}.0").as_str())
    );
    let second = stream.next_event().await;
    assert_eq!(event_id(&second.frame), "to-team");
    let cursor = second.id.clone().unwrap();
    assert_eq!(cursor, format!("{epoch}/{to_user}.{to_team}"));

    // Away: three events; then back on the other edge with Last-Event-ID.
    drop(stream);
    for id in ["missed-1", "missed-2", "missed-3"] {
        stack
            .publish(&calendar_event(id, &["u1"], &["team-1"]))
            .await;
    }
    let mut resumed = SseClient::connect(&url(1), Some(&cursor)).await;
    assert!(matches!(
        resumed.next_event().await.frame,
        ServerFrame::Welcome { .. }
    ));
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(event_id(&resumed.next_event().await.frame));
    }
    got.sort();
    assert_eq!(
        got,
        [
            "missed-1", "missed-1", "missed-2", "missed-2", "missed-3", "missed-3"
        ]
    );
    stack.publish(&calendar_event("live", &["u1"], &[])).await;
    assert_eq!(event_id(&resumed.next_event().await.frame), "live");
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_sends_heartbeat_comments() {
    let stack = Stack::start(0).await;
    let edge = TestEdge::spawn_with(herald_edge::Config {
        heartbeat: Duration::from_millis(100),
        ..edge_config(&stack.nats, "edge-a")
    })
    .await;
    let mut stream = SseClient::connect(
        &format!("http://{}/v1/sse?token={}", edge.addr, user_token("u", &[])),
        None,
    )
    .await;
    assert!(matches!(stream.next().await, SseItem::Event(_)), "welcome");
    assert_eq!(stream.next().await, SseItem::Comment("heartbeat".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_refusals_are_an_error_frame_then_the_end_of_the_stream() {
    let stack = Stack::start(1).await;
    let addr = stack.edge().addr;
    for (query, code) in [
        (String::new(), ErrorCode::MissingToken),
        ("token=garbage".to_string(), ErrorCode::InvalidToken),
        (
            format!("token={}&ns=admins", user_token("u", &["team-*"])),
            ErrorCode::ForbiddenNamespace,
        ),
    ] {
        let mut stream = SseClient::connect(&format!("http://{addr}/v1/sse?{query}"), None).await;
        let SseItem::Event(event) = stream.next().await else {
            panic!("{query}: an error frame first")
        };
        assert!(
            matches!(event.frame, ServerFrame::Error { code: got, .. } if got == code),
            "{query}: {event:?}"
        );
        assert_eq!(stream.next().await, SseItem::End, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sse_cursor_of_another_epoch_is_truncated_and_the_new_ids_start_live() {
    let stack = Stack::start(1).await;
    let live = stack
        .publish(&calendar_event("before", &["u1"], &[]))
        .await
        .published[0]
        .seq;
    let url = format!(
        "http://{}/v1/sse?token={}",
        stack.edge().addr,
        user_token("u1", &[])
    );
    let mut stream = SseClient::connect(&url, Some("another-epoch/999")).await;
    let ServerFrame::Welcome { epoch, .. } = stream.next_event().await.frame else {
        panic!("welcome first")
    };

    assert!(matches!(
        stream.next_event().await.frame,
        ServerFrame::HistoryTruncated { .. }
    ));
    let seq = stack
        .publish(&calendar_event("after", &["u1"], &[]))
        .await
        .published[0]
        .seq;
    let event = stream.next_event().await;
    assert_eq!(event_id(&event.frame), "after");
    assert!(seq > live);
    assert_eq!(
        event.id.as_deref(),
        Some(format!("{epoch}/{seq}").as_str()),
        "no seq of the old epoch in the id"
    );
}
