//! One measured publishing window: publish, wait until every expected delivery has arrived (or
//! deliveries stop coming), and turn the counts, latencies and CPU into report fields.
//!
//! The window runs from the first publish to the last delivery (or the last publish answer,
//! if later); the CPU sample that closes it is the one taken when the last delivery was seen,
//! so waiting out a loss does not dilute the CPU numbers with idle time.

use std::{future::Future, time::Duration};

use serde_json::json;

use crate::{
    clock,
    publish::Tally,
    recorder::{Latency, Recorder, Snapshot},
    report::Report,
    usage::{Probe, Usage},
};

/// Deliveries that stop for this long are taken as all there will be.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on waiting for deliveries after the last publish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(20);

/// What one window measured.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) tally: Tally,
    pub(crate) expected: u64,
    pub(crate) snapshot: Snapshot,
    pub(crate) window_s: f64,
    pub(crate) usage: Usage,
}

/// Resets `recorder`, runs `publish`, and waits for `per_event` deliveries per accepted event.
pub(crate) async fn measure(
    recorder: &Recorder,
    probe: &Probe,
    per_event: u64,
    publish: impl Future<Output = Tally>,
) -> Delivery {
    recorder.reset();
    let start_ns = clock::now_ns();
    let start = probe.sample();
    let tally = publish.await;
    let published_ns = clock::now_ns();
    let expected = tally.accepted * per_event;
    let mut end = probe.sample();
    let mut seen = recorder.n_delivered();
    let mut last_progress = std::time::Instant::now();
    let drain_deadline = last_progress + DRAIN_TIMEOUT;
    while seen < expected {
        tokio::time::sleep(POLL).await;
        let now_seen = recorder.n_delivered();
        let now = std::time::Instant::now();
        if now_seen != seen {
            seen = now_seen;
            last_progress = now;
            end = probe.sample();
        } else if now.duration_since(last_progress) > IDLE_TIMEOUT || now > drain_deadline {
            break;
        }
    }
    let snapshot = recorder.snapshot();
    let end_ns = recorder.last_receipt_ns().max(published_ns);
    Delivery {
        tally,
        expected,
        snapshot,
        window_s: end_ns.saturating_sub(start_ns) as f64 / 1e9,
        usage: probe.between(&start, &end),
    }
}

impl Delivery {
    pub(crate) fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.snapshot.delivered)
    }

    pub(crate) fn deliveries_per_sec(&self) -> f64 {
        self.snapshot.delivered as f64 / self.window_s.max(1e-9)
    }

    pub(crate) fn latency(&self) -> Option<Latency> {
        Latency::of(&self.snapshot.latency_us)
    }

    pub(crate) fn cpu_us_per_delivery(&self) -> Option<f64> {
        (self.snapshot.delivered > 0)
            .then(|| self.usage.server_cpu_s * 1e6 / self.snapshot.delivered as f64)
    }

    /// The common report fields.
    pub(crate) fn fill(&self, report: &mut Report) {
        report.events_published = self.tally.accepted;
        report.deliveries_expected = self.expected;
        report.delivered = self.snapshot.delivered;
        report.lost = self.lost();
        report.duplicated = self.snapshot.duplicated;
        report.deliveries_per_sec = Some(self.deliveries_per_sec());
        report.latency_ms = self.latency();
        report.server_cpu_us_per_delivery = self.cpu_us_per_delivery();
        report.cpu(&self.usage);
        report.publish_errors = self.tally.n_errors();
        report.extra("window_seconds", self.window_s);
        report.extra(
            "publish_offered_per_sec",
            self.tally.sent as f64 / self.tally.seconds().max(1e-9),
        );
        if let Some(latency) = Latency::of(&self.tally.http_latency_us) {
            report.extra("http_latency_ms", latency);
        }
        if !self.tally.errors.is_empty() {
            report.extra("publish_error_kinds", &self.tally.errors);
            report.extra("publish_first_error", &self.tally.first_error);
        }
    }

    /// A compact summary, for scenarios that report several windows.
    pub(crate) fn summary(&self) -> serde_json::Value {
        json!({
            "events_published": self.tally.accepted,
            "deliveries_expected": self.expected,
            "delivered": self.snapshot.delivered,
            "lost": self.lost(),
            "duplicated": self.snapshot.duplicated,
            "deliveries_per_sec": self.deliveries_per_sec(),
            "latency_ms": self.latency(),
            "server_cpu_us_per_delivery": self.cpu_us_per_delivery(),
            "server_cpu_cores": self.usage.server_cores(),
            "loadgen_cpu_cores": self.usage.loadgen_cores(),
            "other_busy_cores": self.usage.other_busy().cores,
            "publish_errors": self.tally.n_errors(),
            "publish_offered_per_sec": self.tally.sent as f64 / self.tally.seconds().max(1e-9),
            "window_seconds": self.window_s,
        })
    }
}
