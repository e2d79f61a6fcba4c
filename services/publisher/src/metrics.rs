//! The publisher's Prometheus metrics, served at `GET /metrics` in the
//! Prometheus text format (0.0.4).
//!
//! One registry per publisher, held in `AppState` and handed to the NATS
//! ingest: nothing is global, so the tests can run several publishers in one
//! process and read each one's own numbers.

use std::time::{Duration, SystemTime};

use herald_shared::jwks::{FetchResult, JwksObserver};
use herald_shared::{error_code::ErrorCode, events::EventType};
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
use time::OffsetDateTime;

/// The `Content-Type` of `GET /metrics`.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How an event arrived: the `source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// `POST /v1/events`.
    Http,
    /// The domain stream (`domain.<type>`).
    Nats,
}

/// What became of an event: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum EventResult {
    /// Stored: new notifications.
    Accepted,
    /// Stored before (same id within the dedup window): nothing new.
    Duplicate,
    /// Refused: a bad request or an invalid event (dead-lettered over NATS).
    Rejected,
    /// Valid, but NATS could not store it (or, over NATS, its dead letter).
    Failed,
}

/// The labels of `events_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventLabels {
    /// `None` (`unknown`) when the body did not name a registered type.
    event_type: Option<EventType>,
    result: EventResult,
    source: Source,
}

/// The `code` label: an [`ErrorCode`]'s wire string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Code(ErrorCode);

/// The registry and its metric families; shared as `Arc<Metrics>`.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    publish_latency: Histogram,
    dead_lettered: Family<Code, Counter>,
    ingest_lag: Histogram,
    nats_connected: Gauge,
    jwks_fetches: Family<Fetch, Counter>,
    jwks_keys: Gauge,
}

/// One event's outcome, counted once when dropped, whichever way the
/// handling ends: `rejected` unless told otherwise.
#[derive(Debug)]
#[must_use = "the event is counted when the outcome drops"]
pub(crate) struct EventOutcome<'a> {
    metrics: &'a Metrics,
    labels: EventLabels,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("herald_publisher"),
            events: Family::default(),
            // 0.5 ms … 4.1 s, doubling.
            publish_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            dead_lettered: Family::default(),
            // 1 ms … 4.4 min, ×4.
            ingest_lag: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            nats_connected: Gauge::default(),
            jwks_fetches: Family::default(),
            jwks_keys: Gauge::default(),
        };
        for result in FetchResult::ALL {
            let _ = metrics.jwks_fetches.get_or_create(&Fetch(result));
        }
        let r = &mut metrics.registry;
        r.register(
            "events",
            "Events handled, by type, result (accepted, duplicate, rejected, failed) and source (http, nats)",
            metrics.events.clone(),
        );
        r.register_with_unit(
            "publish_latency",
            "Time to store one valid event: from parsing it to the last notification's ack",
            Unit::Seconds,
            metrics.publish_latency.clone(),
        );
        r.register(
            "dead_lettered",
            "Domain messages written to the dead-letter stream, by error code",
            metrics.dead_lettered.clone(),
        );
        r.register_with_unit(
            "ingest_lag",
            "Age of a domain message when the publisher takes it up: now minus its JetStream timestamp",
            Unit::Seconds,
            metrics.ingest_lag.clone(),
        );
        r.register(
            "jwks_fetches",
            "Fetches of the --jwks-url endpoint, by result (ok, unavailable, invalid)",
            metrics.jwks_fetches.clone(),
        );
        r.register(
            "jwks_keys",
            "Keys loaded from the --jwks-url endpoint by its last good fetch",
            metrics.jwks_keys.clone(),
        );
        r.register(
            "nats_connected",
            "1 while connected to NATS, else 0",
            metrics.nats_connected.clone(),
        );
        metrics
    }

    /// Starts counting one event from `source`; see [`EventOutcome`].
    pub(crate) fn event(&self, source: Source) -> EventOutcome<'_> {
        EventOutcome {
            metrics: self,
            labels: EventLabels {
                event_type: None,
                result: EventResult::Rejected,
                source,
            },
        }
    }

    /// A dead letter with `code` was stored.
    pub(crate) fn dead_lettered(&self, code: ErrorCode) {
        self.dead_lettered.get_or_create(&Code(code)).inc();
    }

    /// A domain message stored by JetStream at `stored_at` is taken up now.
    pub(crate) fn observe_ingest_lag(&self, stored_at: OffsetDateTime) {
        let lag = SystemTime::now()
            .duration_since(stored_at.into())
            .unwrap_or_default();
        self.ingest_lag.observe(lag.as_secs_f64());
    }

    /// Everything, in the Prometheus text format; `nats_connected` is read at scrape time.
    pub(crate) fn render(&self, nats_connected: bool) -> String {
        self.nats_connected.set(i64::from(nats_connected));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

impl EventOutcome<'_> {
    /// The event is valid, of `event_type`, and about to be stored: from
    /// here on, anything short of [`EventOutcome::stored`] counts as `failed`.
    pub(crate) fn storing(&mut self, event_type: EventType) {
        self.labels.event_type = Some(event_type);
        self.labels.result = EventResult::Failed;
    }

    /// A valid event of `event_type` that is refused all the same (over a
    /// bound or a quota): still counted as `rejected`, under its type.
    pub(crate) fn of_type(&mut self, event_type: EventType) {
        self.labels.event_type = Some(event_type);
    }

    /// Stored (`duplicate`: nothing new), `latency` after parsing began.
    pub(crate) fn stored(&mut self, duplicate: bool, latency: Duration) {
        self.labels.result = if duplicate {
            EventResult::Duplicate
        } else {
            EventResult::Accepted
        };
        self.metrics.publish_latency.observe(latency.as_secs_f64());
    }

    /// Handling failed for a reason other than the event itself.
    pub(crate) fn failed(&mut self) {
        self.labels.result = EventResult::Failed;
    }

    /// For a refused event: the registered type it named, if any, so a
    /// rejection is counted under its type (the label stays bounded).
    pub(crate) fn claimed_type(&mut self, event_type: Option<EventType>) {
        self.labels.event_type = event_type;
    }
}

impl Drop for EventOutcome<'_> {
    fn drop(&mut self) {
        self.metrics.events.get_or_create(&self.labels).inc();
    }
}

impl EncodeLabelSet for EventLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let event_type = self.event_type.map_or("unknown", EventType::as_str);
        let result = match self.result {
            EventResult::Accepted => "accepted",
            EventResult::Duplicate => "duplicate",
            EventResult::Rejected => "rejected",
            EventResult::Failed => "failed",
        };
        let source = match self.source {
            Source::Http => "http",
            Source::Nats => "nats",
        };
        [("type", event_type), ("result", result), ("source", source)].encode(encoder)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `name` (with its labels) in `text`.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn an_outcome_is_counted_once_under_its_labels() {
        let metrics = Metrics::new();
        {
            let mut outcome = metrics.event(Source::Http);
            outcome.storing(EventType::CalendarEventUpdated);
            outcome.stored(false, Duration::from_millis(2));
        }
        {
            let mut outcome = metrics.event(Source::Nats);
            outcome.claimed_type(Some(EventType::CalendarEventDeleted));
        }
        drop(metrics.event(Source::Http));
        {
            let mut outcome = metrics.event(Source::Http);
            outcome.storing(EventType::CalendarEventRsvp);
        }
        metrics.dead_lettered(ErrorCode::ValidationFailed);
        let text = metrics.render(true);

        for (labels, value) in [
            (
                r#"type="calendar.event.updated",result="accepted",source="http""#,
                1.0,
            ),
            (
                r#"type="calendar.event.deleted",result="rejected",source="nats""#,
                1.0,
            ),
            (r#"type="unknown",result="rejected",source="http""#, 1.0),
            (
                r#"type="calendar.event.rsvp",result="failed",source="http""#,
                1.0,
            ),
        ] {
            let name = format!("herald_publisher_events_total{{{labels}}}");
            assert_eq!(sample(&text, &name), Some(value), "{name} in:\n{text}");
        }
        assert_eq!(
            sample(&text, "herald_publisher_publish_latency_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"herald_publisher_dead_lettered_total{code="VALIDATION_FAILED"}"#
            ),
            Some(1.0)
        );
        assert_eq!(sample(&text, "herald_publisher_nats_connected"), Some(1.0));
    }

    #[test]
    fn ingest_lag_is_observed_in_seconds() {
        let metrics = Metrics::new();
        metrics.observe_ingest_lag(OffsetDateTime::now_utc() - Duration::from_secs(2));
        let text = metrics.render(false);
        assert_eq!(
            sample(
                &text,
                r#"herald_publisher_ingest_lag_seconds_bucket{le="1.024"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"herald_publisher_ingest_lag_seconds_bucket{le="4.096"}"#
            ),
            Some(1.0)
        );
        assert_eq!(sample(&text, "herald_publisher_nats_connected"), Some(0.0));
    }
}
