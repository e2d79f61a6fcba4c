//! `idle`: 10,000 sockets (each its own user), 5,000 per edge, and no events: the edges'
//! resident memory per socket once every welcome is in and 2 s have passed, and what the idle
//! sockets cost in CPU over the next 5 s.

use std::{sync::Arc, time::Duration};

use super::{Ctx, connect::connect, diagnostics};
use crate::{cli::Scenario, recorder::Recorder, report::Report, usage::Probe};

const SOCKETS: usize = 10_000;
const SETTLE: Duration = Duration::from_secs(2);
/// After the memory reading: how much CPU idle sockets cost (heartbeats, reconcile passes).
const IDLE_CPU_WINDOW: Duration = Duration::from_secs(5);

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mut stack = ctx.start_stack(Scenario::Idle, true).await?;
    let recorder = Arc::new(Recorder::new());
    let result = async {
        let probe = Probe::new(stack.server_pids());
        let fleet = connect(
            &stack,
            &recorder,
            ctx.sockets(SOCKETS),
            None,
            None,
            SETTLE,
            report,
        )
        .await?;
        let start = probe.sample();
        tokio::time::sleep(IDLE_CPU_WINDOW).await;
        let usage = probe.between(&start, &probe.sample());
        report.cpu(&usage);
        fleet.close().await;
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, Some(&recorder), report).await;
    result
}
