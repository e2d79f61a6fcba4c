//! Tracing: one trace runs from the caller's `traceparent` through the stored
//! message's headers to the edge's `deliver` span.
//!
//! The spans are collected in memory by a subscriber set for this thread only
//! (`set_default`), so the process-wide subscriber the other tests use is
//! untouched. The tests run on a current-thread runtime, where the in-process
//! publisher and edge run their tasks on this same thread, under it.

use async_nats::{HeaderMap, jetstream};
use futures_util::StreamExt;
use herald_shared::{
    events::EventType,
    frames::ServerFrame,
    stream::NOTIFY_STREAM,
    subject::domain_subject,
    trace_context::{TRACEPARENT, TRACESTATE},
};
use herald_tests::{
    WAIT,
    apps::Stack,
    clients::{WsClient, calendar_event, service_token},
};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::{Level, subscriber::DefaultGuard};
use tracing_subscriber::{filter::Targets, prelude::*};

/// The caller's trace, as a domain service would send it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";
const CALLER_TRACESTATE: &str = "caller=t61rcWkgMzE";

fn caller_traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
}

/// Collects the services' spans on this thread until the guard drops.
///
/// A global subscriber that takes nothing is set first. Without one, while
/// this thread's subscriber is the only one registered, tracing-core decides
/// whether a call site is wanted by asking only the default subscriber of the
/// thread that reaches it first (its "just one" shortcut): when another test's
/// publisher, on another thread, reached `ingest_event` first, the answer was
/// "never" for every thread and this test saw no span (about one run in
/// three of `-- ingest`). With two registered, every subscriber is asked.
fn collect_spans() -> (InMemorySpanExporter, DefaultGuard) {
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        // Fails only if a global subscriber is set already: then there are two.
        let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::new());
    });
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(
            Targets::new()
                .with_target("herald_publisher", Level::TRACE)
                .with_target("herald_edge", Level::TRACE),
        )
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-propagation")));
    (exporter, tracing::subscriber::set_default(subscriber))
}

/// The finished spans named `name`, once there are any (bounded wait).
async fn finished(exporter: &InMemorySpanExporter, name: &str) -> Vec<SpanData> {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let spans: Vec<SpanData> = exporter
                .get_finished_spans()
                .expect("the exporter is running")
                .into_iter()
                .filter(|span| span.name == name)
                .collect();
            if !spans.is_empty() {
                return spans;
            }
            // Spans end on this thread: let the other tasks run first.
            tokio::task::yield_now().await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no `{name}` span in time"))
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn trace_id() -> TraceId {
    TraceId::from_hex(TRACE_ID).unwrap()
}

fn seq_of(frame: &ServerFrame) -> u64 {
    match frame {
        ServerFrame::Event { seq, .. } => *seq,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_trace_runs_from_the_http_request_through_the_store_to_the_delivery() {
    // Arrange
    let (exporter, _collecting) = collect_spans();
    let stack = Stack::start(1).await;
    let (mut alice, _) = stack.edge().connect_as("u_1", &[]).await;

    // Act
    let request = reqwest::Client::new()
        .post(format!("{}/v1/events", stack.publisher.url()))
        .bearer_auth(service_token())
        .header(TRACEPARENT, caller_traceparent())
        .header(TRACESTATE, CALLER_TRACESTATE)
        .json(&calendar_event("e1", &["u_1"], &[]))
        .send();
    let answer = tokio::time::timeout(WAIT, request)
        .await
        .expect("the publisher answers in time")
        .expect("post");
    assert_eq!(answer.status(), 202);
    let seq = seq_of(&alice.next_event().await);

    // Assert: the publisher's span continues the caller's trace…
    let post_event = finished(&exporter, "post_event").await.remove(0);
    assert_eq!(post_event.span_context.trace_id(), trace_id());
    assert_eq!(
        post_event.parent_span_id,
        SpanId::from_hex(CALLER_SPAN_ID).unwrap()
    );
    assert!(post_event.parent_span_is_remote);
    assert_eq!(attribute(&post_event, "event.id").as_deref(), Some("e1"));

    // …the stored message carries it on…
    let jetstream = jetstream::new(async_nats::connect(&stack.nats.url).await.expect("connect"));
    let stored = jetstream
        .get_stream(NOTIFY_STREAM)
        .await
        .expect("stream")
        .get_raw_message(seq)
        .await
        .expect("the stored message");
    let traceparent = format!("00-{TRACE_ID}-{}-01", post_event.span_context.span_id());
    assert_eq!(
        stored.headers.get(TRACEPARENT).map(|v| v.as_str()),
        Some(traceparent.as_str())
    );
    assert_eq!(
        stored.headers.get(TRACESTATE).map(|v| v.as_str()),
        Some(CALLER_TRACESTATE)
    );

    // …and the edge's delivery of it is a child of the publisher's span.
    let deliver = finished(&exporter, "deliver").await.remove(0);
    assert_eq!(deliver.span_context.trace_id(), trace_id());
    assert_eq!(deliver.parent_span_id, post_event.span_context.span_id());
    assert_eq!(attribute(&deliver, "channel").as_deref(), Some("user:u_1"));
    assert_eq!(attribute(&deliver, "seq"), Some(seq.to_string()));
    assert_eq!(attribute(&deliver, "n_members").as_deref(), Some("1"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_domain_message_s_traceparent_is_the_parent_of_its_ingest_and_delivery() {
    // Arrange
    let (exporter, _collecting) = collect_spans();
    let stack = Stack::start(1).await;
    let (mut alice, _) = stack.edge().connect_as("u_1", &[]).await;
    let domain = jetstream::new(async_nats::connect(&stack.nats.url).await.expect("connect"));

    // Act
    let mut headers = HeaderMap::new();
    headers.insert(TRACEPARENT, caller_traceparent().as_str());
    let payload = calendar_event("e2", &["u_1"], &[]).to_string();
    tokio::time::timeout(WAIT, async {
        domain
            .publish_with_headers(
                domain_subject(EventType::CalendarEventUpdated).to_string(),
                headers,
                payload.into(),
            )
            .await?
            .await
    })
    .await
    .expect("stored in time")
    .expect("the domain stream stores it");
    let seq = seq_of(&alice.next_event().await);

    // Assert
    let ingest = finished(&exporter, "ingest_event").await.remove(0);
    assert_eq!(ingest.span_context.trace_id(), trace_id());
    assert_eq!(
        ingest.parent_span_id,
        SpanId::from_hex(CALLER_SPAN_ID).unwrap()
    );
    assert_eq!(attribute(&ingest, "event.id").as_deref(), Some("e2"));
    let deliver = finished(&exporter, "deliver").await.remove(0);
    assert_eq!(deliver.span_context.trace_id(), trace_id());
    assert_eq!(deliver.parent_span_id, ingest.span_context.span_id());
    assert_eq!(attribute(&deliver, "seq"), Some(seq.to_string()));
}

#[tokio::test(flavor = "current_thread")]
async fn a_call_s_rpc_span_is_the_parent_the_service_is_told_of() {
    // Arrange: a responder that answers with the traceparent it was sent.
    let (exporter, _collecting) = collect_spans();
    let stack = Stack::start(1).await;
    let responder = async_nats::connect(&stack.nats.url).await.expect("connect");
    let mut requests = responder
        .subscribe("rpc.calendar.event.rsvp")
        .await
        .expect("subscribe");
    responder.flush().await.expect("flush");
    let answering = tokio::spawn(async move {
        let request = requests.next().await.expect("a request");
        let traceparent = request
            .headers
            .as_ref()
            .and_then(|h| h.get(TRACEPARENT))
            .map(|v| v.to_string());
        let body = herald_shared::rpc::RpcReply::ok(traceparent).to_body();
        let reply = request.reply.expect("a reply subject");
        responder.publish(reply, body.into()).await.expect("reply");
        responder.flush().await.expect("flush");
    });
    let mut claims = herald_tests::clients::user_claims("u_1", &[]);
    claims["rpc"] = serde_json::json!(["calendar.event.rsvp"]);
    let token = herald_tests::clients::sign(&claims, herald_tests::clients::TEST_SECRET);
    let (mut alice, _) =
        WsClient::connect_welcomed(&stack.edge().ws_url(&format!("token={token}"))).await;

    // Act
    alice
        .send_json(&serde_json::json!({ "type": "rpc", "ref": "1",
            "method": "calendar.event.rsvp",
            "data": { "calendar_id": "c", "event_id": "e", "response": "accepted" } }))
        .await;
    let frame = alice.next_frame().await;
    answering.await.expect("the responder answered");

    // Assert: the service's parent is the edge's `rpc` span, itself a child
    // of the socket's `session` span.
    let ServerFrame::RpcResult {
        reply: herald_shared::rpc::RpcReply::Result(traceparent),
        ..
    } = frame
    else {
        panic!("expected a result, got {frame:?}")
    };
    let rpc = finished(&exporter, "rpc").await.remove(0);
    let expected = format!(
        "00-{}-{}-01",
        rpc.span_context.trace_id(),
        rpc.span_context.span_id()
    );
    assert_eq!(traceparent.as_str(), Some(expected.as_str()));
    assert_eq!(
        attribute(&rpc, "method").as_deref(),
        Some("calendar.event.rsvp")
    );
    assert_eq!(attribute(&rpc, "outcome").as_deref(), Some("ok"));
    alice.close().await;
    let session = finished(&exporter, "session").await.remove(0);
    assert_eq!(rpc.parent_span_id, session.span_context.span_id());
    assert_eq!(rpc.span_context.trace_id(), session.span_context.trace_id());
}
