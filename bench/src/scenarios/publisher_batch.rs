//! `publisher-batch`: `publisher` over `POST /v1/events/batch`: no sockets and no edges; 64
//! keep-alive HTTP clients post batches of 100 events (each to one user) as fast as they are
//! answered, for 10 s: how many events a second the publisher accepts when a request carries
//! many, and what each costs the publisher and NATS in CPU.

use std::time::Duration;

use super::{Ctx, diagnostics};
use crate::{cli::Scenario, publish, recorder::Latency, report::Report, usage::Probe};

const CLIENTS: usize = 64;
/// Events per request: the most a batch may carry.
const BATCH_SIZE: u64 = 100;
const WINDOW: Duration = Duration::from_secs(10);
/// Users the events are spread over.
const USERS: u64 = 1_000;
/// Services (token `sub`s) the clients post as, `CLIENTS / SERVICES` each. The publisher's
/// default quota is per service (50,000 events/s, 16 MiB/s of stored bytes), under what this
/// scenario is meant to reach; four services measure the publisher, not one service's quota.
const SERVICES: usize = 4;

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mut stack = ctx.start_stack(Scenario::PublisherBatch, false).await?;
    let result = async {
        let publishers = (0..SERVICES)
            .map(|i| stack.http_publisher_as(&format!("herald-bench-{i}"), CLIENTS / SERVICES))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let probe = Probe::new(stack.server_pids());
        let start = probe.sample();
        let tally = publish::closed_loop_batches(
            &publishers,
            CLIENTS,
            BATCH_SIZE,
            ctx.window(WINDOW),
            publish::to_one_user(USERS),
        )
        .await;
        let usage = probe.between(&start, &probe.sample());
        let accepted_per_sec = tally.accepted as f64 / tally.seconds().max(1e-9);
        report.events_published = tally.accepted;
        report.publish_errors = tally.n_errors();
        report.server_cpu_cores = Some(usage.server_cores());
        report.loadgen_cpu_cores = Some(usage.loadgen_cores());
        report.other_busy = Some(usage.other_busy());
        report.extra("accepted_per_sec", accepted_per_sec);
        report.extra("http_clients", CLIENTS);
        report.extra("batch_size", BATCH_SIZE);
        report.extra("services", SERVICES);
        if tally.accepted > 0 {
            report.extra(
                "server_cpu_us_per_event",
                usage.server_cpu_s * 1e6 / tally.accepted as f64,
            );
        }
        // One sample per batch: the round trip of a whole request.
        report.extra("http_latency_ms", Latency::of(&tally.http_latency_us));
        report.extra("server_cpu_cores_by_process", usage.cores_by_process());
        if !tally.errors.is_empty() {
            report.extra("publish_error_kinds", &tally.errors);
            report.extra("publish_first_error", &tally.first_error);
        }
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, None, report).await;
    result
}
