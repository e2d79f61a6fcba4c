//! `unicast`: 1,000 sockets (users `u0`–`u999`), and 2,000 events a second for 10 s through
//! `POST /v1/events`, each to one user, round-robin: every event is one delivery.

use std::{sync::Arc, time::Duration};

use super::{Ctx, connect::connect, delivery, diagnostics};
use crate::{
    cli::Scenario, publish, recorder::Recorder, report::Report, stack::Nats, usage::Probe,
};

const SOCKETS: usize = 1_000;
const RATE: f64 = 2_000.0;
const WINDOW: Duration = Duration::from_secs(10);
/// Keep-alive connections to the publisher (and requests in flight).
pub(super) const HTTP_CONNECTIONS: usize = 32;
/// Time after the last welcome before publishing starts.
pub(super) const SETTLE: Duration = Duration::from_secs(1);

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    run_on(ctx, Scenario::Unicast.name(), Nats::Single, report).await
}

/// The same on `nats`, the stack's logs under `logs`.
pub(super) async fn run_on(
    ctx: &Ctx,
    logs: &str,
    nats: Nats,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut stack = ctx.start_stack_on(logs, true, nats).await?;
    let recorder = Arc::new(Recorder::new());
    let result = async {
        let n_sockets = ctx.sockets(SOCKETS);
        let fleet = connect(&stack, &recorder, n_sockets, None, None, SETTLE, report).await?;
        let publisher = stack.http_publisher(HTTP_CONNECTIONS)?;
        let probe = Probe::new(stack.server_pids());
        let publishing = publish::paced(
            publisher,
            RATE,
            ctx.window(WINDOW),
            HTTP_CONNECTIONS,
            publish::to_one_user(n_sockets as u64),
        );
        let measured = delivery::measure(&recorder, &probe, 1, publishing).await;
        measured.fill(report);
        report.extra("offered_events_per_sec", RATE);
        fleet.close().await;
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, Some(&recorder), report).await;
    result
}
