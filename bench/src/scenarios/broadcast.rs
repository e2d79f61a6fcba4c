//! `broadcast-1k` and `broadcast-5k`: that many sockets, all joined at connect (`ns=bench`,
//! granted by their tokens) to one namespace, and 20 events a second for 10 s to that
//! namespace: every event is one delivery per socket.

use std::{sync::Arc, time::Duration};

use super::{
    Ctx,
    connect::connect,
    delivery, diagnostics,
    unicast::{HTTP_CONNECTIONS, SETTLE},
};
use crate::{
    cli::Scenario, publish, recorder::Recorder, report::Report, stack::Nats, usage::Probe,
};

/// The namespace every broadcast socket joins.
pub(super) const NAMESPACE: &str = "bench";
const RATE: f64 = 20.0;
const WINDOW: Duration = Duration::from_secs(10);

pub(super) async fn run(
    ctx: &Ctx,
    scenario: Scenario,
    sockets: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    run_on(ctx, scenario.name(), Nats::Single, sockets, report).await
}

/// The same on `nats`, the stack's logs under `logs`.
pub(super) async fn run_on(
    ctx: &Ctx,
    logs: &str,
    nats: Nats,
    sockets: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut stack = ctx.start_stack_on(logs, true, nats).await?;
    let recorder = Arc::new(Recorder::new());
    let result = async {
        let n_sockets = ctx.sockets(sockets);
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
        let publishing = publish::paced(
            publisher,
            RATE,
            ctx.window(WINDOW),
            HTTP_CONNECTIONS,
            publish::to_namespace(NAMESPACE),
        );
        let measured = delivery::measure(&recorder, &probe, n_sockets as u64, publishing).await;
        measured.fill(report);
        report.extra("offered_events_per_sec", RATE);
        fleet.close().await;
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, Some(&recorder), report).await;
    result
}
