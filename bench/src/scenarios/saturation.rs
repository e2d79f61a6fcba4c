//! `saturation`: 2,000 sockets in one namespace, and the broadcast rate stepped up (25, 50,
//! 100, … events a second, 4 s per step) until it breaks. A step passes when nothing is lost
//! or repeated, every publish is accepted, and p99 latency is at most 100 ms. The report's
//! main fields are the best passing step's; `steps` has every step.
//!
//! A step over the p99 limit does not end the run: a higher rate can do better, since a socket
//! with a backlog gets several frames per write. Stepping stops after two overloaded steps in a
//! row (something lost, p99 over a second, deliveries or publishing falling behind the offered
//! rate by more than 10%), or once the server has closed any socket (a slow-consumer cut), since
//! later steps would no longer measure the same thing.

use std::{sync::Arc, time::Duration};

use serde_json::json;

use super::{
    Ctx,
    broadcast::NAMESPACE,
    connect::connect,
    delivery::{self, Delivery},
    diagnostics,
    unicast::{HTTP_CONNECTIONS, SETTLE},
};
use crate::{cli::Scenario, publish, recorder::Recorder, report::Report, usage::Probe};

const SOCKETS: usize = 2_000;
/// Broadcast events per second, per step.
const RATES: [f64; 13] = [
    25.0, 50.0, 100.0, 125.0, 150.0, 200.0, 300.0, 400.0, 500.0, 700.0, 1000.0, 1500.0, 2000.0,
];
const STEP: Duration = Duration::from_secs(4);
const P99_LIMIT_MS: f64 = 100.0;
/// A step with a p99 above this is overloaded, not merely slow.
const OVERLOADED_P99_MS: f64 = 1_000.0;
/// A step that achieves less than this share of the offered rate is overloaded.
const KEEPS_UP: f64 = 0.9;
const OVERLOADS_TO_STOP: usize = 2;
/// Pause between steps, so one step's tail does not run into the next.
const BETWEEN_STEPS: Duration = Duration::from_secs(1);

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mut stack = ctx.start_stack(Scenario::Saturation, true).await?;
    let recorder = Arc::new(Recorder::new());
    let result = async {
        let n_sockets = ctx.sockets(SOCKETS);
        let fleet = connect(
            &stack,
            &recorder,
            n_sockets,
            Some(NAMESPACE),
            None,
            SETTLE,
            report,
        )
        .await?;
        let publisher = stack.http_publisher(HTTP_CONNECTIONS)?;
        let probe = Probe::new(stack.server_pids());
        let mut steps = Vec::new();
        let mut best: Option<Delivery> = None;
        let mut overloads_in_a_row = 0;
        for rate in RATES {
            let publishing = publish::paced(
                publisher.clone(),
                rate,
                ctx.window(STEP),
                HTTP_CONNECTIONS,
                publish::to_namespace(NAMESPACE),
            );
            let measured = delivery::measure(&recorder, &probe, n_sockets as u64, publishing).await;
            let p99 = measured.latency().map_or(f64::INFINITY, |l| l.p99);
            let passed = measured.lost() == 0
                && measured.snapshot.duplicated == 0
                && measured.tally.n_errors() == 0
                && p99 <= P99_LIMIT_MS;
            let offered_deliveries = rate * n_sockets as f64;
            let publish_rate = measured.tally.sent as f64 / measured.tally.seconds().max(1e-9);
            let overloaded = measured.lost() > 0
                || p99 > OVERLOADED_P99_MS
                || measured.deliveries_per_sec() < KEEPS_UP * offered_deliveries
                || publish_rate < KEEPS_UP * rate;
            let mut summary = measured.summary();
            summary["offered_events_per_sec"] = json!(rate);
            summary["passed"] = json!(passed);
            summary["overloaded"] = json!(overloaded);
            steps.push(summary);
            overloads_in_a_row = if overloaded {
                overloads_in_a_row + 1
            } else {
                0
            };
            if passed {
                let better = best
                    .as_ref()
                    .is_none_or(|b| measured.deliveries_per_sec() > b.deliveries_per_sec());
                if better {
                    best = Some(measured);
                }
            }
            if overloads_in_a_row >= OVERLOADS_TO_STOP || recorder.n_closed_by_server() > 0 {
                break;
            }
            tokio::time::sleep(BETWEEN_STEPS).await;
        }
        if let Some(best) = &best {
            best.fill(report);
            report.extra("max_ok_deliveries_per_sec", best.deliveries_per_sec());
            report.extra(
                "max_ok_events_per_sec",
                best.tally.accepted as f64 / best.tally.seconds().max(1e-9),
            );
        }
        if best.is_none() {
            report.extra("max_ok_deliveries_per_sec", serde_json::Value::Null);
        }
        report.extra("p99_limit_ms", P99_LIMIT_MS);
        report.extra("steps", steps);
        fleet.close().await;
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, Some(&recorder), report).await;
    result
}
