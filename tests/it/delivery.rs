//! Live delivery: publish → JetStream → RePublish → edge → socket.
//!
//! "Receives nothing" is asserted without sleeping: a marker event published
//! afterwards must be the next frame.

use std::time::Duration;

use herald_shared::frames::ServerFrame;
use herald_tests::{
    WAIT,
    apps::Stack,
    clients::{WsClient, calendar_event, user_token},
};

fn event_of(frame: &ServerFrame) -> (String, u64, String) {
    match frame {
        ServerFrame::Event {
            channel, seq, id, ..
        } => (channel.to_string(), *seq, id.to_string()),
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connected_user_receives_the_event_with_the_published_seq() {
    let stack = Stack::start(1).await;
    let (mut alice, _) = stack.edge().connect_as("u_1", &[]).await;

    let accepted = stack.publish(&calendar_event("e1", &["u_1"], &[])).await;

    let frame = alice.next_event().await;
    assert_eq!(
        event_of(&frame),
        ("user:u_1".into(), accepted.published[0].seq, "e1".into())
    );
    let ServerFrame::Event {
        event_type,
        source,
        data,
        time,
        ..
    } = frame
    else {
        unreachable!()
    };
    assert_eq!(event_type, "calendar.event.updated");
    assert_eq!(source, "calendar-service");
    assert_eq!(data["title"], "Standup");
    assert_eq!(serde_json::to_value(time).unwrap(), "2026-11-26T10:00:00Z");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_member_receives_the_namespace_event() {
    let stack = Stack::start(1).await;
    let token = user_token("u_2", &["team-*"]);
    let (mut member, welcome) =
        WsClient::connect_welcomed(&stack.edge().ws_url(&format!("token={token}&ns=team-42")))
            .await;
    let ServerFrame::Welcome { channels, .. } = welcome else {
        unreachable!()
    };
    let channels: Vec<String> = channels.iter().map(ToString::to_string).collect();
    assert_eq!(channels, ["user:u_2", "ns:team-42"]);

    let accepted = stack
        .publish(&calendar_event("e1", &[], &["team-42"]))
        .await;

    assert_eq!(
        event_of(&member.next_event().await),
        ("ns:team-42".into(), accepted.published[0].seq, "e1".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_outside_the_audience_receives_nothing() {
    let stack = Stack::start(1).await;
    let url = stack.edge().ws_url(&format!(
        "token={}&ns=team-1",
        user_token("carol", &["team-1"])
    ));
    let (mut carol, _) = WsClient::connect_welcomed(&url).await;

    stack
        .publish(&calendar_event("for-bob", &["bob"], &["team-2"]))
        .await;
    stack
        .publish(&calendar_event("marker", &["carol"], &[]))
        .await;

    assert_eq!(
        event_of(&carol.next_event().await).2,
        "marker",
        "carol saw bob's event"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_edges_each_deliver_to_their_own_clients() {
    let stack = Stack::start(2).await;
    let (edge_a, edge_b) = (&stack.edges[0], &stack.edges[1]);
    let (mut alice, welcome) = WsClient::connect_welcomed(
        &edge_a.ws_url(&format!("token={}&ns=team", user_token("alice", &["team"]))),
    )
    .await;
    assert!(matches!(welcome, ServerFrame::Welcome { node, .. } if node == "edge-a"));
    let (mut bob, welcome) = WsClient::connect_welcomed(
        &edge_b.ws_url(&format!("token={}&ns=team", user_token("bob", &["team"]))),
    )
    .await;
    assert!(matches!(welcome, ServerFrame::Welcome { node, .. } if node == "edge-b"));

    stack
        .publish(&calendar_event("to-alice", &["alice"], &[]))
        .await;
    stack
        .publish(&calendar_event("to-bob", &["bob"], &[]))
        .await;
    stack
        .publish(&calendar_event("to-team", &[], &["team"]))
        .await;

    assert_eq!(event_of(&alice.next_event().await).2, "to-alice");
    assert_eq!(event_of(&alice.next_event().await).2, "to-team");
    assert_eq!(event_of(&bob.next_event().await).2, "to-bob");
    assert_eq!(event_of(&bob.next_event().await).2, "to-team");
}

#[tokio::test(flavor = "multi_thread")]
async fn unusual_and_hostile_user_ids_receive_exactly_their_own_events() {
    let stack = Stack::start(1).await;
    let ids = [
        "bob",
        "alice@example.com",
        "Zoë 山田",
        "*",
        ">",
        "a.b",
        "bob.>",
        "bob.*",
    ];
    let mut clients = Vec::new();
    for id in ids {
        let token = user_token(id, &[]);
        let (client, welcome) =
            WsClient::connect_welcomed(&stack.edge().ws_url(&format!("token={token}"))).await;
        assert!(
            matches!(&welcome, ServerFrame::Welcome { user, .. } if user.as_str() == id),
            "{welcome:?}"
        );
        clients.push(client);
    }

    for id in ids {
        stack
            .publish(&calendar_event(&format!("for {id}"), &[id], &[]))
            .await;
    }
    stack.publish(&calendar_event("marker", &ids, &[])).await;

    for (id, client) in ids.iter().zip(&mut clients) {
        let (channel, _, event_id) = event_of(&client.next_event().await);
        assert_eq!(
            (channel.as_str(), event_id.as_str()),
            (format!("user:{id}").as_str(), format!("for {id}").as_str())
        );
        assert_eq!(
            event_of(&client.next_event().await).2,
            "marker",
            "{id} received someone else's event"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_publish_is_delivered_once() {
    let stack = Stack::start(1).await;
    let (mut alice, _) = stack.edge().connect_as("alice", &[]).await;

    let event = calendar_event("once", &["alice"], &[]);
    stack.publish(&event).await;
    assert!(stack.publish(&event).await.duplicate);
    stack
        .publish(&calendar_event("marker", &["alice"], &[]))
        .await;

    assert_eq!(event_of(&alice.next_event().await).2, "once");
    assert_eq!(
        event_of(&alice.next_event().await).2,
        "marker",
        "the duplicate was delivered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_holds_one_subscription_per_channel_and_drops_it_with_the_last_socket() {
    let stack = Stack::start(1).await;
    let url = stack.edge().ws_url(&format!(
        "token={}&ns=team-42",
        user_token("alice", &["team-*"])
    ));
    let (first, _) = WsClient::connect_welcomed(&url).await;
    let (second, _) = WsClient::connect_welcomed(&url).await;

    let mut subscriptions = stack.nats.edge_subscriptions().await;
    subscriptions.sort();
    assert_eq!(
        subscriptions,
        ["live.ns.team-42", "live.user.alice"],
        "one per channel, not per socket"
    );

    first.close().await;
    wait_for_subscriptions(&stack, 2).await;
    second.close().await;
    wait_for_subscriptions(&stack, 0).await;
}

/// Polls the monitoring endpoint until the edge holds `n` subscriptions.
async fn wait_for_subscriptions(stack: &Stack, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let subscriptions = stack.nats.edge_subscriptions().await;
        if subscriptions.len() == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} subscriptions, have {subscriptions:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
