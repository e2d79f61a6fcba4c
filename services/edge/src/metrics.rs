//! The edge's Prometheus metrics, served at `GET /metrics` in the Prometheus
//! text format (0.0.4).
//!
//! One registry per node, held in `AppState`: nothing is global, so the tests
//! can run several edges in one process and read each one's own numbers.
//! Sessions, the handshake, the hub and replays report through the small
//! methods below; the metric families themselves stay private here.

use std::time::{Duration, SystemTime};

use herald_shared::error_code::ErrorCode;
use herald_shared::jwks::{FetchResult, JwksObserver};
use herald_shared::rpc::RpcMethod;
use prometheus_client::{
    encoding::{EncodeLabelSet, LabelSetEncoder, prometheus_text},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};

use crate::frame::FrameKind;

/// The `Content-Type` of `GET /metrics`.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How a client is connected: the `transport` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Transport {
    WebSocket,
    /// Server-sent events (`GET /v1/sse`).
    Sse,
}

/// Counts a connection as open until dropped.
#[derive(Debug)]
#[must_use = "the connection counts as open until the guard is dropped"]
pub(crate) struct ConnectionGuard(Gauge);

/// Counts a replay as running until dropped.
#[derive(Debug)]
#[must_use = "the replay counts as running until the guard is dropped"]
pub(crate) struct RunningGuard(Gauge);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The node's registry and its metric families; shared as `Arc<Metrics>`.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    connections: Family<Transport, Gauge>,
    connections_opened: Family<Transport, Counter>,
    deliveries: Counter,
    delivery_latency: Histogram,
    replays: Counter,
    replays_running: Gauge,
    replayed_events: Counter,
    history_truncated: Counter,
    gaps_repaired: Counter,
    repaired_events: Counter,
    slow_consumer_disconnects: Counter,
    auth_failures: Family<Code, Counter>,
    nats_connected: Gauge,
    jwks_fetches: Family<Fetch, Counter>,
    jwks_keys: Gauge,
    rpc_calls: Family<RpcCall, Counter>,
    rpc_latency: Family<RpcMethodLabel, Histogram, fn() -> Histogram>,
    presence_writes: Counter,
}

/// The `code` label: an [`ErrorCode`]'s wire string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Code(ErrorCode);

impl Metrics {
    pub(crate) fn new() -> Self {
        let metrics = Self {
            registry: Registry::with_prefix("herald_edge"),
            connections: Family::default(),
            connections_opened: Family::default(),
            deliveries: Counter::default(),
            // 0.5 ms … 4.1 s, doubling.
            delivery_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            replays: Counter::default(),
            replays_running: Gauge::default(),
            replayed_events: Counter::default(),
            history_truncated: Counter::default(),
            gaps_repaired: Counter::default(),
            repaired_events: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            auth_failures: Family::default(),
            nats_connected: Gauge::default(),
            jwks_fetches: Family::default(),
            jwks_keys: Gauge::default(),
            rpc_calls: Family::default(),
            rpc_latency: Family::new_with_constructor(rpc_latency_histogram),
            presence_writes: Counter::default(),
        };
        for result in FetchResult::ALL {
            let _ = metrics.jwks_fetches.get_or_create(&Fetch(result));
        }
        // Known label values show from the start, at 0, so the first
        // increment is a change a `rate()` can see.
        for transport in [Transport::WebSocket, Transport::Sse] {
            let _ = metrics.connections.get_or_create(&transport);
            let _ = metrics.connections_opened.get_or_create(&transport);
        }
        for code in [
            ErrorCode::MissingToken,
            ErrorCode::InvalidToken,
            ErrorCode::ExpiredToken,
            ErrorCode::ForbiddenNamespace,
        ] {
            let _ = metrics.auth_failures.get_or_create(&Code(code));
        }
        metrics.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "connections",
            "Client connections open now, by transport",
            self.connections.clone(),
        );
        r.register(
            "connections_opened",
            "Client connections admitted (token accepted), by transport",
            self.connections_opened.clone(),
        );
        r.register(
            "deliveries",
            "Event frames written to client sockets, live and replayed",
            self.deliveries.clone(),
        );
        r.register_with_unit(
            "delivery_latency",
            "Time from a live notification's store in JetStream (Nats-Time-Stamp) to its socket write",
            Unit::Seconds,
            self.delivery_latency.clone(),
        );
        r.register(
            "replays",
            "Channels resumed from a client's cursor (since)",
            self.replays.clone(),
        );
        r.register(
            "replays_running",
            "Replays running now (each holds at most one page of history)",
            self.replays_running.clone(),
        );
        r.register(
            "replayed_events",
            "Events queued by those replays",
            self.replayed_events.clone(),
        );
        r.register(
            "history_truncated",
            "history_truncated frames sent: a cursor of another epoch, or older than the stream holds",
            self.history_truncated.clone(),
        );
        r.register(
            "gaps_repaired",
            "Gaps in a channel's live messages found and filled from the stream",
            self.gaps_repaired.clone(),
        );
        r.register(
            "repaired_events",
            "Events delivered from the stream by gap repairs",
            self.repaired_events.clone(),
        );
        r.register(
            "slow_consumer_disconnects",
            "Sockets cut off with SLOW_CONSUMER for reading too slowly",
            self.slow_consumer_disconnects.clone(),
        );
        r.register(
            "auth_failures",
            "Tokens refused, by error code",
            self.auth_failures.clone(),
        );
        r.register(
            "jwks_fetches",
            "Fetches of the --jwks-url endpoint, by result (ok, unavailable, invalid)",
            self.jwks_fetches.clone(),
        );
        r.register(
            "jwks_keys",
            "Keys loaded from the --jwks-url endpoint by its last good fetch",
            self.jwks_keys.clone(),
        );
        r.register(
            "rpc_calls",
            "rpc calls answered, by method and outcome (ok, service_error, or the edge's code)",
            self.rpc_calls.clone(),
        );
        r.register_with_unit(
            "rpc_latency",
            "Time from sending a call's NATS request to its answer or timeout, by method",
            Unit::Seconds,
            self.rpc_latency.clone(),
        );
        r.register(
            "presence_writes",
            "Presence sets this edge wrote to NATS (one per namespace on a change, coalesced, and per heartbeat)",
            self.presence_writes.clone(),
        );
        r.register(
            "nats_connected",
            "1 while connected to NATS, else 0",
            self.nats_connected.clone(),
        );
        self
    }

    /// Presence sets written to the stream.
    pub(crate) fn presence_written(&self, n: u64) {
        self.presence_writes.inc_by(n);
    }

    /// A replay started; it counts as running until the guard drops (it
    /// finished, failed, or was aborted).
    pub(crate) fn replay_started(&self) -> RunningGuard {
        self.replays_running.inc();
        RunningGuard(self.replays_running.clone())
    }

    /// A replay of one channel finished, having queued `n_events` events.
    pub(crate) fn replay_finished(&self, n_events: u64) {
        self.replays.inc();
        self.replayed_events.inc_by(n_events);
    }

    /// A `history_truncated` frame was sent.
    pub(crate) fn history_truncated(&self) {
        self.history_truncated.inc();
    }

    /// A gap was filled from the stream with `n_events` events.
    pub(crate) fn gap_repaired(&self, n_events: u64) {
        self.gaps_repaired.inc();
        self.repaired_events.inc_by(n_events);
    }

    /// Everything, in the Prometheus text format; `nats_connected` is read at scrape time.
    pub(crate) fn render(&self, nats_connected: bool) -> String {
        self.nats_connected.set(i64::from(nats_connected));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

/// Reported by sessions and the handshake.
impl Metrics {
    /// An admitted connection; it counts as open until the guard drops.
    pub(crate) fn connection_opened(&self, transport: Transport) -> ConnectionGuard {
        self.connections_opened.get_or_create(&transport).inc();
        let open = self.connections.get_or_create_owned(&transport);
        open.inc();
        ConnectionGuard(open)
    }

    /// A token was refused with `code` (at the handshake, in an `auth`
    /// frame, or at `exp` without a refresh).
    pub(crate) fn auth_failed(&self, code: ErrorCode) {
        self.auth_failures.get_or_create(&Code(code)).inc();
    }

    /// An `rpc` call ended with `outcome`; `took` is the NATS round trip of
    /// one that was sent (refusals at the edge have none).
    pub(crate) fn rpc_finished(
        &self,
        method: Option<RpcMethod>,
        outcome: Outcome,
        took: Option<Duration>,
    ) {
        let method = RpcMethodLabel(method);
        if let Some(took) = took {
            self.rpc_latency
                .get_or_create(&method)
                .observe(took.as_secs_f64());
        }
        self.rpc_calls
            .get_or_create(&RpcCall(method, outcome.as_str()))
            .inc();
    }

    /// A socket was cut off with `SLOW_CONSUMER`.
    pub(crate) fn slow_consumer(&self) {
        self.slow_consumer_disconnects.inc();
    }

    /// Frames of these kinds were just written (flushed) to a socket: counts
    /// the events, and observes each live one's latency since it was stored.
    pub(crate) fn frames_written(&self, kinds: impl IntoIterator<Item = FrameKind>) {
        let now = SystemTime::now();
        let mut n_events = 0;
        for kind in kinds {
            // Events have a seq; control frames do not.
            n_events += u64::from(kind.seq().is_some());
            if let FrameKind::Live {
                stored_at: Some(stored_at),
                ..
            } = kind
            {
                // A clock step backwards reads as 0 rather than vanishing.
                let latency = now.duration_since(stored_at).unwrap_or_default();
                self.delivery_latency.observe(latency.as_secs_f64());
            }
        }
        if n_events > 0 {
            self.deliveries.inc_by(n_events);
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Sse => "sse",
        }
    }
}

impl EncodeLabelSet for Transport {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("transport", self.as_str())].encode(encoder)
    }
}

impl EncodeLabelSet for Code {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("code", self.0.as_str())].encode(encoder)
    }
}

/// The `result` label of `jwks_fetches`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Fetch(FetchResult);

impl EncodeLabelSet for Fetch {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        [("result", self.0.as_str())].encode(encoder)
    }
}

/// `--jwks-url`: fetches of the identity provider's keys, and how many it serves.
impl JwksObserver for Metrics {
    fn fetched(&self, result: FetchResult) {
        self.jwks_fetches.get_or_create(&Fetch(result)).inc();
    }

    fn keys_loaded(&self, n_keys: usize) {
        self.jwks_keys
            .set(i64::try_from(n_keys).unwrap_or(i64::MAX));
    }
}

mod rpc_labels;

pub(crate) use rpc_labels::Outcome;
use rpc_labels::{RpcCall, RpcMethodLabel, rpc_latency_histogram};

#[cfg(test)]
mod tests;
