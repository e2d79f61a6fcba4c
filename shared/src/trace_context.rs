//! W3C Trace Context (`traceparent`, `tracestate`) in message headers, so one
//! trace runs from the HTTP request through JetStream to the edge's delivery.
//!
//! What is written or read is the OpenTelemetry context of a `tracing` span.
//! Without an OpenTelemetry layer in the subscriber a span has none, and
//! nothing is written. W3C Trace Context is part of the wire contract, so this
//! module uses [`TraceContextPropagator`] itself rather than whatever global
//! propagator is installed.

use std::str::FromStr;

use async_nats::header::{HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header naming the trace and the parent span: `00-<trace id>-<span id>-<flags>`.
pub const TRACEPARENT: &str = "traceparent";
/// The header with vendor entries that travel with the trace.
pub const TRACESTATE: &str = "tracestate";

// Static names: looking them up allocates nothing (a `&str` name would).
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_NAME: HeaderName = HeaderName::from_static(TRACESTATE);

/// Writes the current span's trace context into NATS message headers.
///
/// Writes nothing when the span has no OpenTelemetry context (no
/// OpenTelemetry layer, or the span is disabled).
pub fn inject(headers: &mut async_nats::HeaderMap) {
    inject_context(
        &tracing::Span::current().context(),
        &mut NatsHeaders(headers),
    );
}

/// The remote parent a NATS message names, as a context to
/// [`set_parent`](OpenTelemetrySpanExt::set_parent) a span to; an empty
/// context when the headers carry no valid `traceparent`.
pub fn extract(headers: &async_nats::HeaderMap) -> Context {
    extract_context(&NatsHeadersRef(headers))
}

/// Makes the sender of a NATS message the parent of `span`, which must not
/// have been entered yet.
///
/// Costs nothing beyond a header lookup when `span` is disabled or the
/// message carries no `traceparent`.
pub fn set_parent(span: &tracing::Span, headers: &async_nats::HeaderMap) {
    if span.is_disabled() || headers.get_last(TRACEPARENT_NAME).is_none() {
        return;
    }
    // Fails only without an OpenTelemetry layer, where there is nothing to link.
    let _ = span.set_parent(extract(headers));
}

/// Writes the current span's trace context into HTTP headers.
pub fn inject_http(headers: &mut http::HeaderMap) {
    inject_context(
        &tracing::Span::current().context(),
        &mut HttpHeaders(headers),
    );
}

/// The remote parent an HTTP request names; an empty context without a valid
/// `traceparent`.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    extract_context(&HttpHeadersRef(headers))
}

/// Makes the caller named by an HTTP request's `traceparent` the parent of
/// `span`, which must not have been entered yet.
pub fn set_parent_http(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key(TRACEPARENT) {
        return;
    }
    let _ = span.set_parent(extract_http(headers));
}

fn inject_context(cx: &Context, injector: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(cx, injector);
}

/// Only the remote parent: not whatever context is current on this thread.
fn extract_context(extractor: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), extractor)
}

/// The NATS header name for a propagator's key.
fn nats_header_name(key: &str) -> Option<HeaderName> {
    match key {
        TRACEPARENT => Some(TRACEPARENT_NAME),
        TRACESTATE => Some(TRACESTATE_NAME),
        other => HeaderName::from_str(other).ok(),
    }
}

// === impl NatsHeaders ===

struct NatsHeaders<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing; leave it out.
        if value.is_empty() {
            return;
        }
        if let Some(name) = nats_header_name(key) {
            self.0.insert(name, value);
        }
    }
}

struct NatsHeadersRef<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get_last(nats_header_name(key)?)
            .map(HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

// === impl HttpHeaders ===

struct HttpHeaders<'a>(&'a mut http::HeaderMap);

impl Injector for HttpHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HttpHeadersRef<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::prelude::*;

    use super::*;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN_ID: &str = "00f067aa0ba902b7";

    fn remote_context() -> Context {
        let span_context = SpanContext::new(
            TraceId::from_hex(TRACE_ID).unwrap(),
            SpanId::from_hex(SPAN_ID).unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("herald", "t61rcWkgMzE")]).unwrap(),
        );
        Context::new().with_remote_span_context(span_context)
    }

    /// A subscriber that gives spans an OpenTelemetry context (exported nowhere).
    fn with_otel_layer<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn a_context_round_trips_through_nats_headers() {
        let mut headers = async_nats::HeaderMap::new();
        inject_context(&remote_context(), &mut NatsHeaders(&mut headers));

        assert_eq!(
            headers.get("traceparent").map(HeaderValue::as_str),
            Some(format!("00-{TRACE_ID}-{SPAN_ID}-01").as_str())
        );
        assert_eq!(
            headers.get("tracestate").map(HeaderValue::as_str),
            Some("herald=t61rcWkgMzE")
        );
        let cx = extract(&headers);
        assert_eq!(
            cx.span().span_context(),
            remote_context().span().span_context()
        );
    }

    #[test]
    fn a_context_round_trips_through_http_headers() {
        let mut headers = http::HeaderMap::new();
        inject_context(&remote_context(), &mut HttpHeaders(&mut headers));

        assert_eq!(
            headers[TRACEPARENT],
            format!("00-{TRACE_ID}-{SPAN_ID}-01").as_str()
        );
        let cx = extract_http(&headers);
        assert_eq!(
            cx.span().span_context(),
            remote_context().span().span_context()
        );
    }

    #[test]
    fn a_span_passes_its_trace_on_and_names_itself_the_parent() {
        with_otel_layer(|| {
            let mut request = http::HeaderMap::new();
            inject_context(&remote_context(), &mut HttpHeaders(&mut request));
            let span = tracing::info_span!("post_event");
            set_parent_http(&span, &request);

            let mut headers = async_nats::HeaderMap::new();
            let span_id = span.in_scope(|| {
                inject(&mut headers);
                tracing::Span::current()
                    .context()
                    .span()
                    .span_context()
                    .span_id()
            });

            let parent = extract(&headers);
            let parent = parent.span();
            let parent = parent.span_context();
            assert!(parent.is_remote() && parent.is_sampled());
            assert_eq!(parent.trace_id(), TraceId::from_hex(TRACE_ID).unwrap());
            assert_eq!(parent.span_id(), span_id);
            assert_ne!(span_id, SpanId::from_hex(SPAN_ID).unwrap());
        });
    }

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_written() {
        let span = tracing::info_span!("post_event");
        let mut headers = async_nats::HeaderMap::new();
        span.in_scope(|| inject(&mut headers));
        assert!(headers.is_empty());
    }

    #[test]
    fn headers_without_a_valid_traceparent_name_no_parent() {
        let mut headers = async_nats::HeaderMap::new();
        assert!(!extract(&headers).span().span_context().is_valid());
        headers.insert("traceparent", "00-not-a-trace-01");
        assert!(!extract(&headers).span().span_context().is_valid());
    }
}
