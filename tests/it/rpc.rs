//! Client calls (`rpc` frames) through real edges to real responders: async-nats
//! subscribers in the test, as a domain service would run them, on a
//! nats-server with the least-privilege users (the edge may publish on
//! `rpc.>`, a domain service may only subscribe there and answer).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use herald_shared::{
    error_code::ErrorCode,
    frames::ServerFrame,
    rpc::{RpcReply, headers},
};
use herald_tests::{
    WAIT,
    apps::{Stack, TestEdge, TestPublisher},
    clients::{WsClient, calendar_event, percent_encode, sign, user_claims},
    nats::NatsServer,
    permissions,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// A user token whose `rpc` claim is `rpc`.
fn rpc_token(sub: &str, rpc: &[&str]) -> String {
    let mut claims = user_claims(sub, &[]);
    claims["rpc"] = json!(rpc);
    sign(&claims, herald_tests::clients::TEST_SECRET)
}

/// nats-server with the least-privilege users, a publisher and `n_edges`
/// edges, each edge's config changed by `tweak`.
async fn stack(n_edges: usize, tweak: impl Fn(&mut herald_edge::Config)) -> Stack {
    let nats = NatsServer::start_with_config(&permissions::least_privilege_config());
    let publisher = TestPublisher::spawn_with(permissions::publisher_config(&nats)).await;
    let mut edges = Vec::new();
    for i in 0..n_edges {
        let node = format!("edge-{}", (b'a' + i as u8) as char);
        let mut config = permissions::edge_config(&nats, &node);
        tweak(&mut config);
        edges.push(TestEdge::spawn_with(config).await);
    }
    Stack {
        publisher,
        edges,
        nats,
    }
}

/// What a responder saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    subject: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// A domain service's replica: answers requests on `subject` in the queue
/// group `calendar`, as the `domain-service` NATS user, with `answer`'s body
/// (`None`: never answers). Ready (its subscription known to the server)
/// when this returns.
struct Responder {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Responder {
    async fn start(
        nats: &NatsServer,
        subject: &str,
        answer: impl Fn(&Seen) -> Option<Vec<u8>> + Send + 'static,
    ) -> Self {
        let url = permissions::url_for(nats, "domain-service");
        let auth = permissions::auth_for("domain-service");
        let client = herald_shared::nats::connect(&url, &auth, "responder", None)
            .await
            .expect("connect as domain-service");
        let mut requests = client
            .queue_subscribe(subject.to_string(), "calendar".into())
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                let headers = message
                    .headers
                    .iter()
                    .flat_map(|h| h.iter())
                    .map(|(k, v)| (k.to_string(), v[0].to_string()))
                    .collect();
                let request = Seen {
                    subject: message.subject.to_string(),
                    headers,
                    body: serde_json::from_slice(&message.payload).unwrap_or(Value::Null),
                };
                record.lock().unwrap().push(request.clone());
                if let (Some(reply), Some(body)) = (message.reply, answer(&request)) {
                    client.publish(reply, body.into()).await.expect("reply");
                }
            }
        });
        Self { seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes what the service saw as the result.
fn echo(seen: &Seen) -> Option<Vec<u8>> {
    let result = json!({ "headers": seen.headers, "data": seen.body, "subject": seen.subject });
    Some(RpcReply::ok(result).to_body())
}

fn rsvp(event: &str) -> Value {
    json!({ "calendar_id": "cal_1", "event_id": event, "response": "accepted" })
}

fn rpc(r#ref: &str, method: &str, data: Value) -> Value {
    json!({ "type": "rpc", "ref": r#ref, "method": method, "data": data })
}

/// The `rpc_result` with `ref`; events before it are returned beside it,
/// anything else fails the test.
async fn result_of(client: &mut WsClient, r#ref: &str) -> (RpcReply, Vec<ServerFrame>) {
    let mut events = Vec::new();
    loop {
        match client.next_frame().await {
            ServerFrame::RpcResult { r#ref: got, reply } if got == r#ref => {
                return (reply, events);
            }
            event @ ServerFrame::Event { .. } => events.push(event),
            other => panic!("expected the result of {ref}, got {other:?}"),
        }
    }
}

/// The code of a failed call.
fn code(reply: &RpcReply) -> String {
    match reply {
        RpcReply::Error(error) => error.code.to_string(),
        RpcReply::Result(result) => panic!("expected an error, got {result}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_edge_side_code_and_the_socket_lives_on() {
    // Arrange
    let stack = stack(1, |config| {
        config.rpc_timeout = Duration::from_millis(300);
        config.max_rpc_in_flight = 3;
    })
    .await;
    // Echoes, but for event `huge`: over half the socket's 1 MiB queue (an
    // answer that could cut the caller off as a slow consumer).
    let answers = Responder::start(&stack.nats, "rpc.calendar.event.rsvp", |seen| {
        if seen.body["event_id"] == "huge" {
            Some(RpcReply::ok("x".repeat(512 * 1024)).to_body())
        } else {
            echo(seen)
        }
    })
    .await;
    let _silent = Responder::start(&stack.nats, "rpc.calendar.event.update", |_| None).await;
    let _broken = Responder::start(&stack.nats, "rpc.calendar.event.delete", |_| {
        Some(br#"{"error":{"code":"not a code","message":"m"}}"#.to_vec())
    })
    .await;
    let _refusing = Responder::start(&stack.nats, "rpc.calendar.event.list", |_| {
        Some(RpcReply::error("SLOT_TAKEN", "taken").unwrap().to_body())
    })
    .await;

    let token = rpc_token(
        "alice",
        &[
            "calendar.event.rsvp",
            "calendar.event.update",
            "calendar.event.delete",
            "calendar.event.list",
            "calendar.event.create",
        ],
    );
    let (mut alice, _) =
        WsClient::connect_welcomed(&stack.edge().ws_url(&format!("token={token}"))).await;
    let delete = json!({ "calendar_id": "c", "event_id": "e" });
    let list =
        json!({ "calendar_id": "c", "from": "2026-12-01T00:00:00Z", "to": "2026-12-08T00:00:00Z" });
    let create = json!({ "calendar_id": "c", "title": "t",
        "starts_at": "2026-12-07T09:00:00Z", "ends_at": "2026-12-07T10:00:00Z" });
    let update = json!({ "calendar_id": "c", "event_id": "e", "title": "new" });

    // Act + Assert: one call per code, on the one socket.
    let cases = [
        ("1", "calendar.event.nope", json!({}), "UNKNOWN_METHOD"),
        (
            "2",
            "calendar.event.create",
            json!({ "calendar_id": "", "title": "x".repeat(201),
                "starts_at": "2026-12-07T10:00:00Z", "ends_at": "2026-12-07T09:00:00Z" }),
            "VALIDATION_FAILED",
        ),
        ("3", "calendar.event.create", create, "RPC_UNAVAILABLE"),
        ("4", "calendar.event.update", update.clone(), "RPC_TIMEOUT"),
        ("5", "calendar.event.delete", delete, "RPC_FAILED"),
        ("6", "calendar.event.list", list, "SLOT_TAKEN"),
        ("6b", "calendar.event.rsvp", rsvp("huge"), "RPC_FAILED"),
    ];
    for (r#ref, method, data, expected) in cases {
        alice.send_json(&rpc(r#ref, method, data)).await;
        let (reply, _) = result_of(&mut alice, r#ref).await;
        assert_eq!(code(&reply), expected, "call {ref} ({method})");
        if expected == "VALIDATION_FAILED" {
            let RpcReply::Error(error) = &reply else {
                unreachable!()
            };
            let paths: Vec<&str> = error.errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(
                paths,
                ["data.calendar_id", "data.ends_at", "data.title"],
                "every failed rule, with its path"
            );
        }
    }
    // At most 3 in flight: the fourth is refused at once, the three time out.
    for r#ref in ["7a", "7b", "7c", "7d"] {
        alice
            .send_json(&rpc(r#ref, "calendar.event.update", update.clone()))
            .await;
    }
    let (refused, _) = result_of(&mut alice, "7d").await;
    assert_eq!(code(&refused), "RATE_LIMITED");
    // Concurrent calls end in any order.
    let mut timed_out = Vec::new();
    for _ in 0..3 {
        match alice.next_frame().await {
            ServerFrame::RpcResult { r#ref, reply } => {
                assert_eq!(code(&reply), "RPC_TIMEOUT");
                timed_out.push(r#ref);
            }
            other => panic!("expected a result, got {other:?}"),
        }
    }
    timed_out.sort();
    assert_eq!(timed_out, ["7a", "7b", "7c"]);
    let (ok, _) = {
        alice
            .send_json(&rpc("8", "calendar.event.rsvp", rsvp("e1")))
            .await;
        result_of(&mut alice, "8").await
    };
    assert!(
        matches!(ok, RpcReply::Result(_)),
        "the socket lives on: {ok:?}"
    );

    // Without the claim: FORBIDDEN_METHOD, and no service saw the call.
    let token = rpc_token("bob", &["calendar.event.list"]);
    let (mut bob, _) =
        WsClient::connect_welcomed(&stack.edge().ws_url(&format!("token={token}"))).await;
    bob.send_json(&rpc("9", "calendar.event.rsvp", rsvp("e-bob")))
        .await;
    assert_eq!(code(&result_of(&mut bob, "9").await.0), "FORBIDDEN_METHOD");
    let no_claim = herald_tests::clients::user_token("carol", &[]);
    let (mut carol, _) =
        WsClient::connect_welcomed(&stack.edge().ws_url(&format!("token={no_claim}"))).await;
    carol
        .send_json(&rpc("10", "calendar.event.rsvp", rsvp("e-carol")))
        .await;
    assert_eq!(
        code(&result_of(&mut carol, "10").await.0),
        "FORBIDDEN_METHOD"
    );
    assert!(
        answers
            .seen()
            .iter()
            .all(|s| s.body["event_id"] == "e1" || s.body["event_id"] == "huge"),
        "only alice's valid call reached the service"
    );
    // Every call counted once by method and outcome; a name not registered
    // is `unknown`, never the client's string.
    let metrics = herald_tests::metrics::scrape(&format!("http://{}", stack.edge().addr)).await;
    let calls = |method: &str, outcome: &str| {
        metrics.sum(
            "herald_edge_rpc_calls_total",
            &[("method", method), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("unknown", "UNKNOWN_METHOD"), 1.0);
    assert_eq!(calls("calendar.event.update", "RPC_TIMEOUT"), 4.0);
    assert_eq!(calls("calendar.event.update", "RATE_LIMITED"), 1.0);
    assert_eq!(calls("calendar.event.rsvp", "ok"), 1.0);
    assert_eq!(calls("calendar.event.rsvp", "FORBIDDEN_METHOD"), 2.0);
    assert_eq!(calls("calendar.event.list", "service_error"), 1.0);
    assert_eq!(calls("calendar.event.delete", "RPC_FAILED"), 1.0);
    assert_eq!(calls("calendar.event.rsvp", "RPC_FAILED"), 1.0);
    assert_eq!(calls("calendar.event.create", "VALIDATION_FAILED"), 1.0);
    assert_eq!(calls("calendar.event.create", "RPC_UNAVAILABLE"), 1.0);
    assert!(!metrics.text.contains("calendar.event.nope"));
    let sent = metrics.sum("herald_edge_rpc_latency_seconds_count", &[]);
    assert_eq!(sent, 9.0, "a latency for each call sent to NATS");

    // A ref-less call is a bad frame (no answer could name it).
    carol
        .send_json(&json!({ "type": "rpc", "method": "calendar.event.rsvp", "data": {} }))
        .await;
    assert!(matches!(
        carol.next_frame().await,
        ServerFrame::Error {
            code: ErrorCode::ValidationFailed,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_sees_the_token_s_sub_and_nothing_the_client_sent() {
    // Arrange
    let stack = stack(1, |_| {}).await;
    let responder = Responder::start(&stack.nats, "rpc.>", echo).await;
    let user = "Zoë@example.com";
    let token = rpc_token(user, &["calendar.*"]);
    let (mut zoe, welcome) =
        WsClient::connect_welcomed(&stack.edge().ws_url(&format!("token={token}"))).await;
    let ServerFrame::Welcome { session_id, .. } = welcome else {
        unreachable!()
    };

    // Act: a forged user in the frame, in its headers, and in `data`.
    zoe.send_json(
        &json!({ "type": "rpc", "ref": "1", "method": "calendar.event.rsvp",
        "data": rsvp("e1"), "user": "mallory", "headers": { "Herald-User": "mallory" },
        "Herald-User": "mallory" }),
    )
    .await;
    let (reply, _) = result_of(&mut zoe, "1").await;
    let mut forged = rsvp("e2");
    forged["Herald-User"] = json!("mallory");
    zoe.send_json(&rpc("2", "calendar.event.rsvp", forged))
        .await;
    let (refused, _) = result_of(&mut zoe, "2").await;

    // Assert
    let RpcReply::Result(result) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(result["subject"], "rpc.calendar.event.rsvp");
    assert_eq!(result["headers"][headers::USER], user);
    assert_eq!(result["headers"][headers::SESSION], session_id);
    assert_eq!(result["headers"][headers::NODE], "edge-a");
    assert_eq!(
        result["data"],
        rsvp("e1"),
        "the body is the validated data, nothing else"
    );
    assert_eq!(code(&refused), "VALIDATION_FAILED");
    let seen = responder.seen();
    assert_eq!(seen.len(), 1, "the forged call never reached the service");
    assert!(
        seen.iter()
            .all(|s| s.headers.get(headers::USER).map(String::as_str) == Some(user))
    );

    // A user id a header would trim cannot call at all.
    let spaced = rpc_token(" alice", &["calendar.*"]);
    let (mut spaced, _) = WsClient::connect_welcomed(
        &stack
            .edge()
            .ws_url(&format!("token={}", percent_encode(&spaced))),
    )
    .await;
    spaced
        .send_json(&rpc("3", "calendar.event.rsvp", rsvp("e3")))
        .await;
    assert_eq!(
        code(&result_of(&mut spaced, "3").await.0),
        "FORBIDDEN_METHOD"
    );

    // Only edges may publish on rpc.>: a domain service cannot forge a call.
    let url = permissions::url_for(&stack.nats, "domain-service");
    let auth = permissions::auth_for("domain-service");
    let forger = herald_shared::nats::connect(&url, &auth, "forger", None)
        .await
        .unwrap();
    let mut forged_headers = async_nats::HeaderMap::new();
    forged_headers.insert(headers::USER, "mallory");
    let sent = forger
        .send_request(
            "rpc.calendar.event.rsvp",
            async_nats::Request::new()
                .headers(forged_headers)
                .payload(rsvp("e4").to_string().into())
                .timeout(Some(Duration::from_millis(500))),
        )
        .await;
    assert!(sent.is_err(), "a domain service's request was answered");
    assert_eq!(
        responder.seen().len(),
        1,
        "nothing forged reached the service"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_service_times_out_while_the_socket_keeps_receiving_events() {
    // Arrange
    let stack = stack(1, |config| config.rpc_timeout = Duration::from_secs(2)).await;
    let _silent = Responder::start(&stack.nats, "rpc.calendar.event.rsvp", |_| None).await;
    let token = rpc_token("u_1", &["calendar.event.rsvp"]);
    let (mut client, _) =
        WsClient::connect_welcomed(&stack.edge().ws_url(&format!("token={token}"))).await;

    // Act
    client
        .send_json(&rpc("slow", "calendar.event.rsvp", rsvp("e1")))
        .await;
    for k in 0..5 {
        stack
            .publish(&calendar_event(&format!("ev-{k}"), &["u_1"], &[]))
            .await;
    }
    let (reply, events) = result_of(&mut client, "slow").await;

    // Assert: all five events arrived while the call waited.
    assert_eq!(code(&reply), "RPC_TIMEOUT");
    let ids: Vec<String> = events
        .iter()
        .map(|e| match e {
            ServerFrame::Event { id, .. } => id.to_string(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(ids, ["ev-0", "ev-1", "ev-2", "ev-3", "ev-4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_reaches_exactly_the_calling_socket() {
    // Arrange: two sockets of one user on one edge, one on another edge.
    let stack = stack(2, |_| {}).await;
    let _responder = Responder::start(&stack.nats, "rpc.>", echo).await;
    let token = rpc_token("alice", &["calendar.*"]);
    let query = format!("token={token}");
    let (mut caller, _) = WsClient::connect_welcomed(&stack.edges[0].ws_url(&query)).await;
    let (mut same_edge, _) = WsClient::connect_welcomed(&stack.edges[0].ws_url(&query)).await;
    let (mut other_edge, _) = WsClient::connect_welcomed(&stack.edges[1].ws_url(&query)).await;

    // Act
    caller
        .send_json(&rpc("r", "calendar.event.rsvp", rsvp("e1")))
        .await;
    let (reply, _) = result_of(&mut caller, "r").await;

    // Assert: after a round trip, the others have received nothing at all.
    assert!(matches!(reply, RpcReply::Result(_)));
    assert!(
        caller.round_trip("p").await.is_empty(),
        "one answer per call"
    );
    assert!(same_edge.round_trip("p").await.is_empty());
    assert!(other_edge.round_trip("p").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_calls_from_a_hundred_sockets_through_two_edges_to_two_replicas_are_answered_once()
 {
    // Arrange
    let stack = stack(2, |_| {}).await;
    let replicas = [
        Responder::start(&stack.nats, "rpc.>", echo).await,
        Responder::start(&stack.nats, "rpc.>", echo).await,
    ];
    let answered = Arc::new(AtomicUsize::new(0));
    const SOCKETS: usize = 100;
    const CALLS: usize = 10;

    // Act: each socket makes its calls in two waves of five (under the
    // default in-flight bound of 8), all sockets at once.
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SOCKETS {
        let url = stack.edges[s % 2].ws_url(&format!(
            "token={}",
            rpc_token(&format!("u{s}"), &["calendar.*"])
        ));
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let (mut client, _) = WsClient::connect_welcomed(&url).await;
            let mut results: HashMap<String, Value> = HashMap::new();
            for wave in [0..5, 5..CALLS] {
                for c in wave.clone() {
                    client
                        .send_json(&rpc(
                            &c.to_string(),
                            "calendar.event.rsvp",
                            rsvp(&format!("s{s}-c{c}")),
                        ))
                        .await;
                }
                for _ in wave {
                    match client.next_frame().await {
                        ServerFrame::RpcResult {
                            r#ref,
                            reply: RpcReply::Result(result),
                        } => {
                            assert!(results.insert(r#ref, result).is_none(), "a second answer");
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("socket {s}: {other:?}"),
                    }
                }
            }
            // Each answer is to its own call, from the caller's own user.
            for (r#ref, result) in &results {
                assert_eq!(result["data"]["event_id"], format!("s{s}-c{ref}"));
                assert_eq!(result["headers"][headers::USER], format!("u{s}"));
            }
            assert!(client.round_trip("end").await.is_empty(), "no extra answer");
            results.len()
        }));
    }
    let mut per_socket = Vec::new();
    for task in tasks {
        per_socket.push(
            tokio::time::timeout(WAIT * 3, task)
                .await
                .expect("in time")
                .expect("socket task"),
        );
    }

    // Assert: 1,000 answered once each, by both replicas, each call handled once.
    assert!(per_socket.iter().all(|&n| n == CALLS));
    assert_eq!(answered.load(Ordering::Relaxed), SOCKETS * CALLS);
    let handled: Vec<usize> = replicas.iter().map(|r| r.seen().len()).collect();
    eprintln!(
        "rpc: {} calls answered in {:?} (100 connects included), replicas handled {handled:?}",
        SOCKETS * CALLS,
        started.elapsed()
    );
    assert_eq!(
        handled.iter().sum::<usize>(),
        SOCKETS * CALLS,
        "each call handled exactly once"
    );
    assert!(
        handled.iter().all(|&n| n > 0),
        "either replica answers: {handled:?}"
    );
    let mut ids: Vec<String> = replicas
        .iter()
        .flat_map(|r| r.seen())
        .map(|s| s.body["event_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        SOCKETS * CALLS,
        "no call reached the services twice"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_while_the_edge_has_no_nats_is_unavailable_at_once_and_never_sent_later() {
    // Arrange
    let stack = stack(1, |config| config.rpc_timeout = Duration::from_secs(5)).await;
    let token = rpc_token("alice", &["calendar.*"]);
    let (mut alice, _) =
        WsClient::connect_welcomed(&stack.edge().ws_url(&format!("token={token}"))).await;
    let Stack {
        publisher,
        edges,
        mut nats,
    } = stack;
    let metrics_url = format!("http://{}", edges[0].addr);
    nats.kill();
    herald_tests::metrics::wait_for(&metrics_url, "herald_edge_nats_connected", &[], |v| {
        v == 0.0
    })
    .await;

    // Act
    let started = std::time::Instant::now();
    alice
        .send_json(&rpc("1", "calendar.event.rsvp", rsvp("e1")))
        .await;
    let (reply, _) = result_of(&mut alice, "1").await;

    // Assert: at once, not after --rpc-timeout-ms; and nothing reaches a
    // service once NATS is back.
    assert_eq!(code(&reply), "RPC_UNAVAILABLE");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    nats.restart();
    let responder = Responder::start(&nats, "rpc.>", echo).await;
    herald_tests::metrics::wait_for(&metrics_url, "herald_edge_nats_connected", &[], |v| {
        v == 1.0
    })
    .await;
    alice
        .send_json(&rpc("2", "calendar.event.rsvp", rsvp("e2")))
        .await;
    assert!(matches!(
        result_of(&mut alice, "2").await.0,
        RpcReply::Result(_)
    ));
    let seen: Vec<Value> = responder
        .seen()
        .into_iter()
        .map(|s| s.body["event_id"].clone())
        .collect();
    assert_eq!(
        seen,
        [json!("e2")],
        "the call refused while disconnected was never sent"
    );
    drop((publisher, edges));
}
