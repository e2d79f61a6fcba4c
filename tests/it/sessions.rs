//! The publisher's session API, across edges: disconnect (with or without a
//! revocation) ends a user's sockets everywhere with `REVOKED`/4010, revoked
//! tokens are refused at connect and on refresh (also by an edge started
//! later), unsubscribe takes a namespace and leaves the socket, and user ids
//! holding subject characters reach only their own user.

use std::time::{Duration, Instant};

use herald_shared::{error_code::ErrorCode, frames::ServerFrame};
use herald_tests::{
    apps::{Stack, TestEdge},
    clients::{
        Answer, Closed, TEST_SECRET, WsClient, calendar_event, now, percent_encode, service_token,
        sign, user_claims,
    },
    sse::{SseClient, SseItem},
};
use serde_json::{Value, json};

/// How soon every socket must be told, per the SPEC.
const WITHIN: Duration = Duration::from_secs(1);

/// A service token with the session scope.
fn sessions_token() -> String {
    let mut claims = herald_tests::clients::service_claims();
    claims["scope"] = json!("sessions:manage");
    sign(&claims, TEST_SECRET)
}

/// A user token issued at `iat` (`None`: without the claim).
fn token_issued(sub: &str, ns: &[&str], iat: Option<i64>) -> String {
    let mut claims = user_claims(sub, ns);
    match iat {
        Some(iat) => claims["iat"] = json!(iat),
        None => {
            claims.as_object_mut().unwrap().remove("iat");
        }
    }
    sign(&claims, TEST_SECRET)
}

/// `POST /v1/users/{user}/{action}` with `token` and a JSON body.
async fn session_call(
    stack: &Stack,
    token: &str,
    user: &str,
    action: &str,
    body: &Value,
) -> Answer {
    let url = format!(
        "{}/v1/users/{}/{action}",
        stack.publisher.url(),
        percent_encode(user)
    );
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("publisher answers");
    Answer::read(response).await
}

async fn accepted(stack: &Stack, user: &str, action: &str, body: Value) {
    let answer = session_call(stack, &sessions_token(), user, action, &body).await;
    assert_eq!(answer.status, 202, "{action} {user}: {:?}", answer.body);
}

fn ws_query(token: &str) -> String {
    format!("token={token}")
}

/// A socket ended by the session API: one `REVOKED` error, then close 4010.
async fn expect_revoked(client: &mut WsClient) {
    let (frames, closed) = client.until_closed().await;
    assert!(
        matches!(
            frames.last(),
            Some(ServerFrame::Error {
                code: ErrorCode::Revoked,
                r#ref: None,
                ..
            })
        ),
        "{frames:?}"
    );
    assert_eq!(
        closed,
        Closed {
            code: 4010,
            reason: "REVOKED".into()
        }
    );
}

/// A connect refused with `REVOKED` and 4010.
async fn expect_refused(edge: &TestEdge, token: &str) {
    let mut client = WsClient::connect(&edge.ws_url(&ws_query(token))).await;
    let (frames, closed) = client.until_closed().await;
    assert!(
        matches!(
            &frames[..],
            [ServerFrame::Error {
                code: ErrorCode::Revoked,
                ..
            }]
        ),
        "{frames:?}"
    );
    assert_eq!(closed.code, 4010);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_ends_the_user_on_every_edge_and_refuses_old_tokens_everywhere() {
    let stack = Stack::start(2).await;
    let (a, b) = (&stack.edges[0], &stack.edges[1]);
    let old = token_issued("alice", &[], Some(now() - 10));
    let no_iat = token_issued("alice", &[], None);
    let (mut on_a, _) = WsClient::connect_welcomed(&a.ws_url(&ws_query(&old))).await;
    let (mut on_b, _) = WsClient::connect_welcomed(&b.ws_url(&ws_query(&no_iat))).await;
    let mut sse = SseClient::connect(&format!("http://{}/v1/sse?token={old}", b.addr), None).await;
    assert!(matches!(
        sse.next_event().await.frame,
        ServerFrame::Welcome { .. }
    ));
    let bob = token_issued("bob", &[], Some(now() - 10));
    let (mut bob_on_a, _) = WsClient::connect_welcomed(&a.ws_url(&ws_query(&bob))).await;
    // One session control subscription per edge, however many users it serves.
    let control: Vec<String> = stack
        .nats
        .all_edge_subscriptions()
        .await
        .into_iter()
        .filter(|s| s.starts_with("session."))
        .collect();
    assert_eq!(control, ["session.*", "session.*"]);

    let asked = Instant::now();
    let before = now() - 5;
    accepted(
        &stack,
        "alice",
        "disconnect",
        json!({ "revoke_tokens_issued_before": before }),
    )
    .await;
    expect_revoked(&mut on_a).await;
    expect_revoked(&mut on_b).await;
    let last = loop {
        match sse.next().await {
            SseItem::Event(event) => break event.frame,
            SseItem::Comment(_) => continue,
            SseItem::End => panic!("the stream ended without a frame"),
        }
    };
    assert!(
        matches!(
            last,
            ServerFrame::Error {
                code: ErrorCode::Revoked,
                ..
            }
        ),
        "{last:?}"
    );
    assert_eq!(sse.next().await, SseItem::End);
    assert!(asked.elapsed() < WITHIN, "took {:?}", asked.elapsed());
    bob_on_a.round_trip("still-here").await;

    // Old tokens (and tokens without `iat`) are refused on both edges…
    for edge in [a, b] {
        expect_refused(edge, &old).await;
        expect_refused(edge, &no_iat).await;
    }
    // …and on an edge started after the revocation.
    let c = TestEdge::spawn(&stack.nats, "edge-c").await;
    expect_refused(&c, &old).await;

    // A token issued at or after the instant works everywhere.
    let fresh = token_issued("alice", &[], Some(before));
    for edge in [a, b, &c] {
        let (client, _) = WsClient::connect_welcomed(&edge.ws_url(&ws_query(&fresh))).await;
        client.close().await;
    }

    // Refreshing an open socket with a revoked token ends it.
    let (mut refreshed, _) = WsClient::connect_welcomed(&c.ws_url(&ws_query(&fresh))).await;
    refreshed
        .send_json(&json!({ "type": "auth", "ref": "r", "token": old }))
        .await;
    expect_revoked(&mut refreshed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disconnect_without_a_revocation_lets_the_same_token_back_in() {
    let stack = Stack::start(2).await;
    let token = token_issued("carol", &[], Some(now() - 10));
    let mut clients = Vec::new();
    for edge in &stack.edges {
        clients.push(
            WsClient::connect_welcomed(&edge.ws_url(&ws_query(&token)))
                .await
                .0,
        );
    }
    let asked = Instant::now();
    accepted(&stack, "carol", "disconnect", json!({})).await;
    for client in &mut clients {
        expect_revoked(client).await;
    }
    assert!(asked.elapsed() < WITHIN, "took {:?}", asked.elapsed());
    let (client, _) = WsClient::connect_welcomed(&stack.edge().ws_url(&ws_query(&token))).await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unsubscribe_takes_the_namespace_and_the_socket_lives_on() {
    let stack = Stack::start(2).await;
    let token = token_issued("dave", &["team-*"], Some(now()));
    let query = format!("{}&ns=team-42,team-7", ws_query(&token));
    let (mut ws, _) = WsClient::connect_welcomed(&stack.edges[0].ws_url(&query)).await;
    let mut sse = SseClient::connect(
        &format!("http://{}/v1/sse?{query}", stack.edges[1].addr),
        None,
    )
    .await;
    assert!(matches!(
        sse.next_event().await.frame,
        ServerFrame::Welcome { .. }
    ));

    accepted(
        &stack,
        "dave",
        "unsubscribe",
        json!({ "namespace": "team-42" }),
    )
    .await;
    let expected = json!({ "type": "unsubscribed", "channel": "ns:team-42", "code": "REVOKED" });
    let frame = ws.next_frame().await;
    assert_eq!(serde_json::to_value(&frame).unwrap(), expected);
    let frame = sse.next_event().await.frame;
    assert_eq!(serde_json::to_value(&frame).unwrap(), expected);

    // The socket lives on, without the namespace.
    stack
        .publish(&calendar_event("evt-42", &[], &["team-42"]))
        .await;
    stack
        .publish(&calendar_event("evt-7", &[], &["team-7"]))
        .await;
    for frame in [ws.next_frame().await, sse.next_event().await.frame] {
        assert!(
            matches!(&frame, ServerFrame::Event { channel, .. } if channel.to_string() == "ns:team-7"),
            "{frame:?}"
        );
    }
    ws.round_trip("alive").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_id_with_subject_characters_reaches_only_that_user() {
    let stack = Stack::start(1).await;
    let users = ["a", "a.b", "a.*", "a.>", "*", ">", "a~2Eb", "a=2Eb"];
    // Users revoked in an earlier round are left out of the later ones.
    let mut revoked = Vec::new();
    for target in ["a.b", "*", ">", "a.*"] {
        let iat = Some(now() - 10);
        let mut clients = Vec::new();
        for user in users.into_iter().filter(|user| !revoked.contains(user)) {
            let token = token_issued(user, &[], iat);
            let url = stack.edge().ws_url(&ws_query(&token));
            clients.push((user, WsClient::connect_welcomed(&url).await.0));
        }
        accepted(
            &stack,
            target,
            "disconnect",
            json!({ "revoke_tokens_issued_before": now() - 5 }),
        )
        .await;
        for (user, client) in &mut clients {
            if *user == target {
                expect_revoked(client).await;
            }
        }
        for (user, client) in clients {
            if user != target {
                let mut client = client;
                client.round_trip(&format!("{target} spared {user}")).await;
                client.close().await;
                // Nor are the others' tokens revoked.
                let token = token_issued(user, &[], iat);
                let url = stack.edge().ws_url(&ws_query(&token));
                WsClient::connect_welcomed(&url).await.0.close().await;
            }
        }
        revoked.push(target);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_api_needs_the_sessions_scope_and_a_sound_body() {
    let stack = Stack::start(1).await;
    let token = token_issued("erin", &[], Some(now()));
    let (mut client, _) = WsClient::connect_welcomed(&stack.edge().ws_url(&ws_query(&token))).await;

    for action in ["disconnect", "unsubscribe"] {
        let body = json!({ "namespace": "team-1" });
        let answer = session_call(&stack, &service_token(), "erin", action, &body).await;
        assert_eq!(answer.status, 403, "{action}: {:?}", answer.body);
        assert_eq!(answer.body["code"], "FORBIDDEN");
    }
    let future = json!({ "revoke_tokens_issued_before": now() + 3600 });
    let bad_bodies = [
        ("disconnect", future, "VALIDATION_FAILED"),
        ("disconnect", json!({ "revoke": 1 }), "VALIDATION_FAILED"),
        ("unsubscribe", json!({}), "VALIDATION_FAILED"),
        (
            "unsubscribe",
            json!({ "namespace": "" }),
            "VALIDATION_FAILED",
        ),
    ];
    for (action, body, code) in bad_bodies {
        let answer = session_call(&stack, &sessions_token(), "erin", action, &body).await;
        assert_eq!(
            answer.body["code"], code,
            "{action} {body}: {:?}",
            answer.body
        );
    }
    // None of that reached the user.
    client.round_trip("untouched").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_that_missed_the_message_ends_the_connections_when_the_revocation_reaches_it() {
    use herald_shared::{
        ids::UserId,
        session_control::{REVOCATIONS_BUCKET, Revocation},
        subject::revocation_key,
    };
    let stack = Stack::start(1).await;
    let old = token_issued("frank", &[], Some(now() - 10));
    let fresh = token_issued("frank", &[], Some(now()));
    let (mut revoked, _) = WsClient::connect_welcomed(&stack.edge().ws_url(&ws_query(&old))).await;
    let (mut kept, _) = WsClient::connect_welcomed(&stack.edge().ws_url(&ws_query(&fresh))).await;

    // Only the bucket entry, as after a NATS reconnect that lost the core message.
    let nats = async_nats::connect(&stack.nats.url).await.unwrap();
    let bucket = async_nats::jetstream::new(nats)
        .get_key_value(REVOCATIONS_BUCKET)
        .await
        .unwrap();
    let revocation = Revocation {
        revoked_before: u64::try_from(now() - 5).unwrap(),
        expires: u64::try_from(now() + 600).unwrap(),
    };
    let key = revocation_key(&UserId::parse("frank").unwrap());
    bucket
        .put(key, serde_json::to_vec(&revocation).unwrap().into())
        .await
        .unwrap();
    expect_revoked(&mut revoked).await;
    // A token issued after the instant is not covered.
    kept.round_trip("kept").await;
}
