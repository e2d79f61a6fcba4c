//! `rpc`: 100 sockets (users `u0`–`u99`, each the only member of calendar `bench-u<i>`, tokens
//! with the `rpc` claim `calendar.*`) call the example calendar service (two replicas in one
//! queue group) through both edges: first each fills its calendar to 20 events (not measured),
//! then 10 calls/s per socket for 10 s (1,000 calls/s offered, open loop), then flat out for
//! 10 s (each socket's next call as soon as its last is answered).
//!
//! Half the calls are `calendar.event.list` of one week (the read path: a key-value read), half
//! are writes (`calendar.event.create`, or `calendar.event.delete` of the socket's oldest event
//! once it holds 20: a compare-and-set on the calendar's key, the domain event published
//! through JetStream and acked, and the notification it becomes on the caller's socket).
//!
//! Latency is from sending the `rpc` frame to reading its `rpc_result`; CPU per call is the
//! server processes' CPU over the window (which ends when the last answer and the last due
//! notification are in) divided by the calls answered, for all of them (edges, calendar
//! services, publisher, NATS) and for the edges and calendar services alone.
//!
//! The edges run with the client frame rate limit lifted (20 frames/s per socket by default),
//! which would otherwise cap a socket's calls rather than the servers.

use std::{sync::Arc, time::Duration};

use anyhow::bail;
use serde_json::{Value, json};

use super::{Ctx, diagnostics};
use crate::{
    caller::{self, Callers, KEEP, Pace},
    calls::CallTally,
    cli::Scenario,
    recorder::{Latency, Recorder},
    report::Report,
    stack::{CalendarOptions, Nats, Stack},
    usage::{Probe, Usage},
};

const SOCKETS: usize = 100;
const REPLICAS: usize = 2;
/// Calls per second each socket offers in the paced window.
const RATE_PER_SOCKET: f64 = 10.0;
const WINDOW: Duration = Duration::from_secs(10);
/// Calls each socket keeps in flight in the flat-out window (a browser awaiting each answer).
const FLAT_OUT_IN_FLIGHT: usize = 1;
/// Bound on filling the calendars before the measured windows.
const FILL_TIMEOUT: Duration = Duration::from_secs(60);
/// Client frames per second and burst per socket on the edges: past any rate reached here.
const FRAME_LIMIT: &str = "1000000";

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n_sockets = ctx.sockets(SOCKETS);
    let mut options = ctx.stack_options(Scenario::Rpc.name(), true, Nats::Single);
    options.edge_env = vec![
        ("HERALD_CLIENT_FRAMES_PER_SEC", FRAME_LIMIT.into()),
        ("HERALD_CLIENT_FRAME_BURST", FRAME_LIMIT.into()),
    ];
    options.calendar = Some(CalendarOptions {
        replicas: REPLICAS,
        members: caller::members(n_sockets),
    });
    let mut stack = Stack::start(&options).await?;
    let recorder = Arc::new(Recorder::new());
    let result = async {
        let callers = Callers::connect(&stack, n_sockets, &recorder).await?;
        report.sockets = n_sockets;
        report.extra("calendar_service_replicas", REPLICAS);
        let fill = callers.window(Pace::Fill(KEEP), FILL_TIMEOUT).await;
        report.extra("fill", outcomes(&fill));
        let expected = (n_sockets * KEEP) as u64;
        if fill.n_ok() < expected {
            bail!(
                "filling the calendars: {} of {expected} creates ok, {} refused, {} missing \
                 (see `fill`)",
                fill.n_ok(),
                fill.n_errors(),
                fill.n_missing()
            );
        }
        let probe = Probe::new(stack.server_pids());
        let offered = RATE_PER_SOCKET * n_sockets as f64;
        let interval = Duration::from_secs_f64(1.0 / RATE_PER_SOCKET);
        let (paced, paced_usage) = measure(&callers, &probe, Pace::Every(interval), ctx).await;
        let (flat, flat_usage) =
            measure(&callers, &probe, Pace::FlatOut(FLAT_OUT_IN_FLIGHT), ctx).await;
        fill_report(report, &paced, &paced_usage, &flat, &flat_usage);
        report.extra("offered_calls_per_sec", offered);
        report.extra("flat_out_in_flight_per_socket", FLAT_OUT_IN_FLIGHT);
        report.extra("paced", summary(&paced, &paced_usage));
        report.extra("flat_out", summary(&flat, &flat_usage));
        callers.close().await;
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, Some(&recorder), report).await;
    result
}

/// One window, with the servers' CPU from its start to when every socket was done.
async fn measure(callers: &Callers, probe: &Probe, pace: Pace, ctx: &Ctx) -> (CallTally, Usage) {
    let start = probe.sample();
    let tally = callers.window(pace, ctx.window(WINDOW)).await;
    let usage = probe.between(&start, &probe.sample());
    (tally, usage)
}

/// The top-level fields: latency at the offered rate, throughput and CPU flat out, and the
/// outcomes of both windows.
fn fill_report(
    report: &mut Report,
    paced: &CallTally,
    paced_usage: &Usage,
    flat: &CallTally,
    flat_usage: &Usage,
) {
    let both = [paced, flat];
    let sum = |f: fn(&CallTally) -> u64| both.iter().map(|t| f(t)).sum::<u64>();
    report.latency_ms = Latency::of(&paced.latency_us());
    report.events_published = sum(CallTally::writes_ok);
    report.deliveries_expected = report.events_published;
    report.delivered = sum(|t| t.notifications);
    report.lost = report.deliveries_expected.saturating_sub(report.delivered);
    report.duplicated = sum(|t| t.duplicated_notifications);
    report.server_cpu_cores = Some(flat_usage.server_cores());
    report.loadgen_cpu_cores = Some(flat_usage.loadgen_cores());
    report.other_busy = Some(flat_usage.other_busy());
    report.extra("calls_per_sec_paced", paced.calls_per_sec());
    report.extra("calls_per_sec_flat_out", flat.calls_per_sec());
    if let Some(latency) = Latency::of(&flat.latency_us()) {
        report.extra("p50_ms_flat_out", latency.p50);
        report.extra("p99_ms_flat_out", latency.p99);
    }
    report.extra(
        "server_cpu_us_per_call_paced",
        per_call(paced_usage.server_cpu_s, paced),
    );
    report.extra(
        "server_cpu_us_per_call",
        per_call(flat_usage.server_cpu_s, flat),
    );
    report.extra(
        "edge_service_cpu_us_per_call",
        per_call(edge_and_service_s(flat_usage), flat),
    );
    report.extra("calls_sent", sum(CallTally::n_sent));
    report.extra("calls_ok", sum(CallTally::n_ok));
    report.extra("call_errors", sum(CallTally::n_errors));
    report.extra("calls_missing", sum(CallTally::n_missing));
    report.extra("unexpected_results", sum(|t| t.unexpected));
}

/// One window's numbers.
fn summary(tally: &CallTally, usage: &Usage) -> Value {
    let mut summary = outcomes(tally);
    let fields = json!({
        "calls_per_sec": tally.calls_per_sec(),
        "latency_ms": Latency::of(&tally.latency_us()),
        "server_cpu_us_per_call": per_call(usage.server_cpu_s, tally),
        "edge_service_cpu_us_per_call": per_call(edge_and_service_s(usage), tally),
        "server_cpu_cores": usage.server_cores(),
        "server_cpu_cores_by_process": usage.cores_by_process(),
        "loadgen_cpu_cores": usage.loadgen_cores(),
        "other_busy_cores": usage.other_busy().cores,
        "window_seconds": tally.seconds(),
    });
    if let (Value::Object(summary), Value::Object(fields)) = (&mut summary, fields) {
        summary.extend(fields);
    }
    summary
}

/// What became of the calls, per method and in total, and of the notifications they caused.
fn outcomes(tally: &CallTally) -> Value {
    json!({
        "calls_sent": tally.n_sent(),
        "ok": tally.n_ok(),
        "errors": tally.n_errors(),
        "missing": tally.n_missing(),
        "unexpected_results": tally.unexpected,
        "by_method": tally.by_method(),
        "notifications_expected": tally.writes_ok(),
        "notifications": tally.notifications,
        "notifications_duplicated": tally.duplicated_notifications,
    })
}

/// CPU seconds of the edges and the calendar services alone.
fn edge_and_service_s(usage: &Usage) -> f64 {
    usage
        .per_process
        .iter()
        .filter(|(name, _)| name.starts_with("edge-") || name.starts_with("calendar-"))
        .map(|(_, seconds)| seconds)
        .sum()
}

fn per_call(cpu_s: f64, tally: &CallTally) -> Option<f64> {
    let answered = tally.n_answered();
    (answered > 0).then(|| cpu_s * 1e6 / answered as f64)
}
