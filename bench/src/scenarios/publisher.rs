//! `publisher`: no sockets and no edges; 64 keep-alive HTTP clients post events (each to one
//! user) as fast as they are answered, for 10 s: how many events a second the publisher
//! accepts, and what each costs the publisher and NATS in CPU.

use std::time::Duration;

use super::{Ctx, diagnostics};
use crate::{
    cli::Scenario,
    publish::{self, Tally},
    recorder::Latency,
    report::Report,
    usage::{Probe, Usage},
};

const CLIENTS: usize = 64;
const WINDOW: Duration = Duration::from_secs(10);
/// Users the events are spread over.
const USERS: u64 = 1_000;

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mut stack = ctx.start_stack(Scenario::Publisher, false).await?;
    let result = async {
        let publisher = stack.http_publisher(CLIENTS)?;
        let probe = Probe::new(stack.server_pids());
        let start = probe.sample();
        let tally = publish::closed_loop(
            publisher,
            CLIENTS,
            ctx.window(WINDOW),
            publish::to_one_user(USERS),
        )
        .await;
        let usage = probe.between(&start, &probe.sample());
        report_publishing(report, &tally, &usage, CLIENTS);
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, None, report).await;
    result
}

/// What a publishing scenario reports: events accepted (a second, and their
/// server CPU each), errors, CPU, and the HTTP round trips (one per request).
pub(super) fn report_publishing(report: &mut Report, tally: &Tally, usage: &Usage, clients: usize) {
    let accepted_per_sec = tally.accepted as f64 / tally.seconds().max(1e-9);
    report.events_published = tally.accepted;
    report.publish_errors = tally.n_errors();
    report.cpu(usage);
    report.extra("accepted_per_sec", accepted_per_sec);
    report.extra("http_clients", clients);
    if tally.accepted > 0 {
        report.extra(
            "server_cpu_us_per_event",
            usage.server_cpu_s * 1e6 / tally.accepted as f64,
        );
    }
    report.extra("http_latency_ms", Latency::of(&tally.http_latency_us));
    if !tally.errors.is_empty() {
        report.extra("publish_error_kinds", &tally.errors);
        report.extra("publish_first_error", &tally.first_error);
    }
}
