//! `publisher-batch`: `publisher` over `POST /v1/events/batch`: no sockets and no edges; 64
//! keep-alive HTTP clients post batches of 100 events (each to one user) as fast as they are
//! answered, for 10 s: how many events a second the publisher accepts when a request carries
//! many, and what each costs the publisher and NATS in CPU.

use std::time::Duration;

use super::{Ctx, diagnostics};
use crate::{cli::Scenario, publish, report::Report, usage::Probe};

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
        // `http_latency_ms` has one sample per batch: the round trip of a whole request.
        super::publisher::report_publishing(report, &tally, &usage, CLIENTS);
        report.extra("batch_size", BATCH_SIZE);
        report.extra("services", SERVICES);
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, None, report).await;
    result
}
