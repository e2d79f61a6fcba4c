//! The example calendar service (`examples/calendar-service`) behind Herald:
//! two replicas in one queue group share the calls, a killed one loses no
//! call that was answered (its change is stored and delivered exactly once),
//! and its rules (membership by `Herald-User`, validation, the room rule)
//! hold whoever calls.
//!
//! Calls are sent here as the edge sends them: NATS requests on
//! `rpc.<method>` with `Herald-User`; `rpc_through_edges` sends them as a
//! browser does.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::atomic::Ordering,
    time::Duration,
};

use async_nats::{HeaderMap, client::Request};
use calendar_service::calendar::CalendarId;
use futures_util::{StreamExt as _, stream};
use herald_shared::{
    frames::ServerFrame,
    ids::UserId,
    rpc::{RpcMethod, RpcReply, headers},
    subject::rpc_subject,
};
use herald_tests::{
    WAIT,
    apps::{
        Stack, TestCalendarService, TestEdge, TestPublisher, calendar_config, edge_config,
        publisher_config,
    },
    clients::{TEST_SECRET, WsClient, sign, user_claims, user_token},
    nats::NatsServer,
    permissions,
};
use serde_json::{Value, json};

/// How long a call waits for its reply; one sent to the killed replica gets none.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A config whose calendars `team-0`… have `members`.
fn config_with(stack: &Stack, calendars: usize, members: &[&str]) -> calendar_service::Config {
    let mut config = calendar_config(&stack.nats);
    for i in 0..calendars {
        let calendar = CalendarId::parse(format!("team-{i}")).unwrap();
        let members = members.iter().map(|m| UserId::parse(*m).unwrap()).collect();
        config.seed_members.insert(calendar, members);
    }
    config
}

/// A call as the edge makes it: `None` when no reply came in time.
async fn call(
    nats: &async_nats::Client,
    user: Option<&str>,
    method: RpcMethod,
    data: &Value,
) -> Option<RpcReply> {
    let mut headers = HeaderMap::new();
    if let Some(user) = user {
        headers.insert(headers::USER, user);
    }
    let request = Request::new()
        .headers(headers)
        .payload(data.to_string().into())
        .timeout(Some(CALL_TIMEOUT));
    let reply = nats
        .send_request(String::from(rpc_subject(method)), request)
        .await
        .ok()?;
    Some(RpcReply::parse(&reply.payload).expect("a reply of the rpc shape"))
}

fn result(reply: Option<RpcReply>) -> Value {
    match reply {
        Some(RpcReply::Result(result)) => result,
        other => panic!("expected a result, got {other:?}"),
    }
}

fn error_code(reply: Option<RpcReply>) -> String {
    match reply {
        Some(RpcReply::Error(err)) => err.code.as_str().to_string(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn create(calendar: &str, title: &str, hour: u32) -> Value {
    json!({
        "calendar_id": calendar, "title": title,
        "starts_at": format!("2026-12-08T{hour:02}:00:00Z"),
        "ends_at": format!("2026-12-08T{hour:02}:30:00Z"),
    })
}

fn week(calendar: &str) -> Value {
    json!({ "calendar_id": calendar, "from": "2026-12-07T00:00:00Z", "to": "2026-12-14T00:00:00Z" })
}

async fn listed(nats: &async_nats::Client, user: &str, calendar: &str) -> Vec<Value> {
    let list = result(
        call(
            nats,
            Some(user),
            RpcMethod::CalendarEventList,
            &week(calendar),
        )
        .await,
    );
    list["events"].as_array().expect("events").clone()
}

async fn nats_client(stack: &Stack) -> async_nats::Client {
    tokio::time::timeout(WAIT, async_nats::connect(&stack.nats.url))
        .await
        .expect("connect in time")
        .expect("connect to NATS")
}

/// Reads `socket` until every id of `until` arrived as a `calendar.event.created`;
/// returns each created event id with how many times it arrived.
async fn created_events(socket: &mut WsClient, until: &HashSet<String>) -> HashMap<String, u32> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut notification_ids = HashSet::new();
    while !until.iter().all(|id| seen.contains_key(id)) {
        let ServerFrame::Event {
            id,
            event_type,
            data,
            ..
        } = socket.next_event().await
        else {
            unreachable!()
        };
        assert!(
            notification_ids.insert(id.to_string()),
            "notification {id} twice"
        );
        if event_type == "calendar.event.created" {
            let event_id = data["event_id"].as_str().expect("event_id").to_string();
            *seen.entry(event_id).or_default() += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_the_calls_and_a_killed_one_loses_no_answered_call() {
    const CALENDARS: usize = 10;
    const CALLS: usize = 200;
    let stack = Stack::start(1).await;
    let config = config_with(&stack, CALENDARS, &["alice"]);
    let replica_a = TestCalendarService::spawn_with(config.clone()).await;
    let replica_b = TestCalendarService::spawn_with(config).await;
    let (answered_a, answered_b) = (replica_a.answered.clone(), replica_b.answered.clone());
    let mut alice = WsClient::connect_welcomed(
        &stack
            .edge()
            .ws_url(&format!("token={}", user_token("alice", &[]))),
    )
    .await
    .0;
    let nats = nats_client(&stack).await;

    // 200 creates, 20 at a time, over 10 calendars; replica A is killed
    // once 60 have been answered.
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel();
    let mut replica_a = Some(replica_a);
    let mut killed_tx = Some(killed_tx);
    let killer = {
        let answered = (answered_a.clone(), answered_b.clone());
        tokio::spawn(async move {
            let reached = tokio::time::timeout(WAIT, async {
                while answered.0.load(Ordering::Relaxed) + answered.1.load(Ordering::Relaxed) < 60 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            assert!(reached.is_ok(), "60 calls answered in time");
            let a_before_kill = answered.0.load(Ordering::Relaxed);
            replica_a.take().unwrap().kill().await;
            let _ = killed_tx.take().unwrap().send(a_before_kill);
        })
    };
    let replies: Vec<(String, Option<RpcReply>)> = stream::iter(0..CALLS)
        .map(|i| {
            let nats = nats.clone();
            async move {
                let calendar = format!("team-{}", i % CALENDARS);
                let data = create(&calendar, &format!("call {i}"), 8 + (i % 10) as u32);
                let reply = call(&nats, Some("alice"), RpcMethod::CalendarEventCreate, &data).await;
                (calendar, reply)
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    killer.await.expect("the killer ran");
    let answered_by_a = killed_rx.await.expect("replica A was killed");

    let mut answered: HashSet<String> = HashSet::new();
    let mut unanswered = 0;
    for (_, reply) in &replies {
        match reply {
            Some(RpcReply::Result(event)) => {
                assert!(answered.insert(event["event_id"].as_str().unwrap().to_string()));
            }
            None => unanswered += 1,
            Some(RpcReply::Error(err)) => panic!("call refused: {err:?}"),
        }
    }
    // One marker per calendar through the survivor: it also publishes any
    // change the killed replica stored but had not yet published.
    let mut markers = HashSet::new();
    for i in 0..CALENDARS {
        let data = create(&format!("team-{i}"), "marker", 19);
        let marker =
            result(call(&nats, Some("alice"), RpcMethod::CalendarEventCreate, &data).await);
        markers.insert(marker["event_id"].as_str().unwrap().to_string());
    }
    let delivered = created_events(&mut alice, &markers).await;
    let mut stored = BTreeSet::new();
    for i in 0..CALENDARS {
        for event in listed(&nats, "alice", &format!("team-{i}")).await {
            stored.insert(event["event_id"].as_str().unwrap().to_string());
        }
    }

    eprintln!(
        "calendar replicas: {} calls, {} answered (A {answered_by_a} before its kill, B {}), \
         {unanswered} unanswered, {} stored, {} delivered",
        CALLS,
        answered.len(),
        answered_b.load(Ordering::Relaxed),
        stored.len() - markers.len(),
        delivered.len() - markers.len(),
    );
    assert!(
        answered_by_a > 0 && answered_b.load(Ordering::Relaxed) > 0,
        "both answered"
    );
    assert_eq!(answered.len() + unanswered, CALLS);
    for id in &answered {
        assert!(stored.contains(id), "answered {id} is not stored");
        assert_eq!(delivered.get(id), Some(&1), "answered {id} delivered once");
    }
    // A call the killed replica stored without answering is still one event,
    // delivered once; nothing else is there.
    assert!(delivered.values().all(|&n| n == 1), "no duplicates");
    assert_eq!(
        delivered.keys().cloned().collect::<BTreeSet<_>>(),
        stored,
        "every stored event delivered, and only those"
    );
    assert!(stored.len() <= CALLS + CALENDARS);
    replica_b.stop().await.expect("replica B drains");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_members_change_a_calendar_and_its_rules_hold() {
    let stack = Stack::start(0).await;
    let mut config = config_with(&stack, 1, &["alice"]);
    // An id with subject wildcards is one key of its own.
    let wild = CalendarId::parse("x.*>").unwrap();
    config
        .seed_members
        .insert(wild, [UserId::parse("alice").unwrap()].into());
    let _service = TestCalendarService::spawn_with(config).await;
    let nats = nats_client(&stack).await;
    let room = |title: &str, hour: u32| {
        let mut data = create("team-0", title, hour);
        data["location"] = json!("Room 1");
        data
    };

    let first = result(
        call(
            &nats,
            Some("alice"),
            RpcMethod::CalendarEventCreate,
            &room("A", 9),
        )
        .await,
    );
    // Bob is no member: refused, and told nothing about the calendar.
    let bob = call(
        &nats,
        Some("bob"),
        RpcMethod::CalendarEventCreate,
        &room("B", 12),
    )
    .await;
    assert_eq!(error_code(bob), "FORBIDDEN");
    let bob_reads = call(
        &nats,
        Some("bob"),
        RpcMethod::CalendarEventList,
        &week("team-0"),
    )
    .await;
    assert_eq!(error_code(bob_reads), "FORBIDDEN");
    let unknown = call(
        &nats,
        Some("bob"),
        RpcMethod::CalendarEventList,
        &week("nope"),
    )
    .await;
    assert_eq!(
        error_code(unknown),
        "FORBIDDEN",
        "a missing calendar looks the same"
    );
    // A `Herald-User` in the body is a field like any other: refused as unknown.
    let mut forged = room("C", 13);
    forged["Herald-User"] = json!("alice");
    let forged = call(&nats, Some("bob"), RpcMethod::CalendarEventCreate, &forged).await;
    assert_eq!(error_code(forged), "VALIDATION_FAILED");
    // No caller at all (not from an edge).
    let nobody = call(&nats, None, RpcMethod::CalendarEventCreate, &room("D", 14)).await;
    assert_eq!(error_code(nobody), "FORBIDDEN");

    // The room is taken at 9:00–9:30.
    let clash = call(
        &nats,
        Some("alice"),
        RpcMethod::CalendarEventCreate,
        &room("E", 9),
    )
    .await;
    assert_eq!(error_code(clash), "SLOT_TAKEN");
    // Moving it so it would end before it starts.
    let backwards = json!({ "calendar_id": "team-0", "event_id": first["event_id"],
                            "ends_at": "2026-12-08T08:00:00Z" });
    match call(
        &nats,
        Some("alice"),
        RpcMethod::CalendarEventUpdate,
        &backwards,
    )
    .await
    {
        Some(RpcReply::Error(err)) => {
            assert_eq!(err.code.as_str(), "VALIDATION_FAILED");
            assert_eq!(err.errors[0].path, "data.ends_at");
        }
        other => panic!("expected VALIDATION_FAILED, got {other:?}"),
    }
    let gone =
        json!({ "calendar_id": "team-0", "event_id": "evt_missing", "response": "accepted" });
    let gone = call(&nats, Some("alice"), RpcMethod::CalendarEventRsvp, &gone).await;
    assert_eq!(error_code(gone), "NOT_FOUND");

    let events = listed(&nats, "alice", "team-0").await;
    assert_eq!(events.len(), 1, "only alice's first event: {events:?}");
    assert_eq!(events[0]["title"], "A");

    result(
        call(
            &nats,
            Some("alice"),
            RpcMethod::CalendarEventCreate,
            &create("x.*>", "W", 9),
        )
        .await,
    );
    assert_eq!(listed(&nats, "alice", "x.*>").await.len(), 1);
    let x = call(
        &nats,
        Some("alice"),
        RpcMethod::CalendarEventList,
        &week("x"),
    )
    .await;
    assert_eq!(
        error_code(x),
        "FORBIDDEN",
        "x is another calendar, with no members"
    );
    assert_eq!(listed(&nats, "alice", "team-0").await.len(), 1);
}

/// NATS with the least-privilege users of the README, the publisher, two
/// edges and one calendar replica (calendar `team-0`, member alice), each as
/// its own NATS user.
async fn least_privilege_stack() -> (Stack, TestCalendarService) {
    let nats = NatsServer::start_with_config(&permissions::least_privilege_config());
    let mut config = publisher_config(&nats);
    config.nats_url = permissions::url_for(&nats, "publisher");
    config.nats_auth = permissions::auth_for("publisher");
    let publisher = TestPublisher::spawn_with(config).await;
    let mut edges = Vec::new();
    for node in ["edge-a", "edge-b"] {
        let mut config = edge_config(&nats, node);
        config.nats_url = permissions::url_for(&nats, "edge");
        config.nats_auth = permissions::auth_for("edge");
        edges.push(TestEdge::spawn_with(config).await);
    }
    let stack = Stack {
        publisher,
        edges,
        nats,
    };
    let mut config = config_with(&stack, 1, &["alice"]);
    config.nats_url = permissions::url_for(&stack.nats, "domain-service");
    config.nats_auth = permissions::auth_for("domain-service");
    let service = TestCalendarService::spawn_with(config).await;
    (stack, service)
}

/// A socket of `user` on `edge` whose token may call every calendar method.
async fn caller(edge: &TestEdge, user: &str) -> WsClient {
    let mut claims = user_claims(user, &[]);
    claims["rpc"] = json!(["calendar.event.*"]);
    let token = sign(&claims, TEST_SECRET);
    WsClient::connect_welcomed(&edge.ws_url(&format!("token={token}")))
        .await
        .0
}

/// Sends an `rpc` frame and reads until its `rpc_result`; the events read
/// meanwhile are returned too.
async fn rpc(
    socket: &mut WsClient,
    r#ref: &str,
    method: &str,
    data: Value,
) -> (RpcReply, Vec<ServerFrame>) {
    socket
        .send_json(&json!({ "type": "rpc", "ref": r#ref, "method": method, "data": data }))
        .await;
    let mut events = Vec::new();
    loop {
        match socket.next_frame().await {
            ServerFrame::RpcResult { r#ref: got, reply } if got == r#ref => {
                return (reply, events);
            }
            event @ ServerFrame::Event { .. } => events.push(event),
            other => panic!("expected the rpc_result of {ref}, got {other:?}"),
        }
    }
}

/// The event frame of `event_type` for `event_id`: among `seen`, or next on `socket`.
async fn event_for(
    socket: &mut WsClient,
    seen: Vec<ServerFrame>,
    event_type: &str,
    event_id: &Value,
) -> ServerFrame {
    let matches = |frame: &ServerFrame| {
        matches!(frame, ServerFrame::Event { event_type: t, data, .. }
            if t == event_type && &data["event_id"] == event_id)
    };
    if let Some(frame) = seen.into_iter().find(matches) {
        return frame;
    }
    let frame = socket.next_event().await;
    assert!(
        matches(&frame),
        "expected {event_type} of {event_id}, got {frame:?}"
    );
    frame
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_through_edges_changes_the_calendar_for_every_socket_and_refuses_non_members() {
    let (stack, _service) = least_privilege_stack().await;
    let mut alice_a = caller(&stack.edges[0], "alice").await;
    let mut alice_b = caller(&stack.edges[1], "alice").await;
    let mut bob = caller(&stack.edges[0], "bob").await;

    // Alice creates on edge-a: answered on her socket, delivered to her
    // other socket on edge-b.
    let (reply, seen) = rpc(
        &mut alice_a,
        "1",
        "calendar.event.create",
        create("team-0", "Planning", 9),
    )
    .await;
    let RpcReply::Result(created) = reply else {
        panic!("create refused: {reply:?}")
    };
    let event_id = created["event_id"].clone();
    event_for(&mut alice_a, seen, "calendar.event.created", &event_id).await;
    let on_b = event_for(
        &mut alice_b,
        Vec::new(),
        "calendar.event.created",
        &event_id,
    )
    .await;
    let ServerFrame::Event { channel, data, .. } = on_b else {
        unreachable!()
    };
    assert_eq!(channel.to_string(), "user:alice");
    assert_eq!(data["title"], "Planning");

    // The service sees the token's `sub`: her RSVP is hers, whatever `data` says.
    let rsvp = json!({ "calendar_id": "team-0", "event_id": event_id, "response": "accepted" });
    let (reply, seen) = rpc(&mut alice_a, "2", "calendar.event.rsvp", rsvp).await;
    assert!(matches!(reply, RpcReply::Result(_)), "{reply:?}");
    let ServerFrame::Event { data, .. } =
        event_for(&mut alice_a, seen, "calendar.event.rsvp", &event_id).await
    else {
        unreachable!()
    };
    assert_eq!(data["user_id"], "alice");

    // Bob belongs to no calendar: refused, his socket lives on, nothing changed.
    let (reply, _) = rpc(
        &mut bob,
        "3",
        "calendar.event.create",
        create("team-0", "Bob's", 11),
    )
    .await;
    match reply {
        RpcReply::Error(err) => assert_eq!(err.code.as_str(), "FORBIDDEN"),
        other => panic!("expected FORBIDDEN, got {other:?}"),
    }
    let (reply, _) = rpc(&mut bob, "4", "calendar.event.list", week("team-0")).await;
    assert!(
        matches!(&reply, RpcReply::Error(err) if err.code.as_str() == "FORBIDDEN"),
        "{reply:?}"
    );
    let (reply, _) = rpc(&mut alice_b, "5", "calendar.event.list", week("team-0")).await;
    let RpcReply::Result(list) = reply else {
        panic!("list refused: {reply:?}")
    };
    let events = list["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["rsvps"]["alice"], "accepted");
}

/// The service's `call` span is a child of the edge's `rpc` span, and the
/// notification the call publishes is delivered in the same trace.
#[tokio::test(flavor = "current_thread")]
async fn a_call_s_handling_and_its_deliveries_join_the_caller_s_trace() {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::{filter::Targets, prelude::*};

    let stack = Stack::start(1).await;
    let _service = TestCalendarService::spawn_with(config_with(&stack, 1, &["alice"])).await;
    // A first call with no subscriber of ours registers the service's
    // callsites; installing ours then rebuilds their interest. (Another test
    // of this binary registering them while ours is being installed could
    // leave them disabled here.)
    let nats = nats_client(&stack).await;
    result(
        call(
            &nats,
            Some("alice"),
            RpcMethod::CalendarEventList,
            &week("team-0"),
        )
        .await,
    );

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(
            Targets::new()
                .with_target("herald_edge", tracing::Level::TRACE)
                .with_target("herald_publisher", tracing::Level::TRACE)
                .with_target("calendar_service", tracing::Level::TRACE),
        )
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("calendar")));
    // This thread only: the tests run on a current-thread runtime.
    let _collecting = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    let finished = |name: &'static str| {
        let exporter = exporter.clone();
        async move {
            tokio::time::timeout(WAIT, async {
                loop {
                    let spans: Vec<SpanData> = exporter
                        .get_finished_spans()
                        .expect("the exporter runs")
                        .into_iter()
                        .filter(|span| span.name == name)
                        .collect();
                    if !spans.is_empty() {
                        return spans;
                    }
                    tokio::task::yield_now().await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no `{name}` span in time"))
        }
    };
    let mut alice = caller(stack.edge(), "alice").await;
    // Once more right before the call: tracing keeps one interest cache for
    // every thread, and other tests installing and dropping their own
    // subscribers meanwhile can leave a callsite of ours disabled (seen under
    // load: the `call` span, which ends before the reply is sent, missing).
    tracing::callsite::rebuild_interest_cache();

    let (reply, seen) = rpc(
        &mut alice,
        "1",
        "calendar.event.create",
        create("team-0", "Traced", 9),
    )
    .await;
    let RpcReply::Result(created) = reply else {
        panic!("create refused: {reply:?}")
    };
    event_for(
        &mut alice,
        seen,
        "calendar.event.created",
        &created["event_id"],
    )
    .await;

    let edge_rpc = finished("rpc").await.remove(0);
    let call = finished("call").await.remove(0);
    assert_eq!(call.parent_span_id, edge_rpc.span_context.span_id());
    assert_eq!(
        call.span_context.trace_id(),
        edge_rpc.span_context.trace_id()
    );
    let deliveries = finished("deliver").await;
    assert!(
        deliveries
            .iter()
            .any(|d| d.span_context.trace_id() == call.span_context.trace_id()),
        "the notification is delivered in the call's trace"
    );
}
