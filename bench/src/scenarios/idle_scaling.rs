//! `idle-scaling`: idle sockets (each its own user) added to ONE edge in steps of 1,000, 5,000,
//! 10,000 and 19,000 in all (the machine allows ~20,000 open files per process). At each step:
//! the memory the step's sockets added to that edge, per socket (`added_rss_per_socket_bytes`;
//! the first step also carries the edge's one-off growth, so the average over all sockets so far
//! is reported beside it), the edge's CPU per socket connected in the step (handshake, token,
//! subscription), and what the idle sockets cost it over 5 s. Flat from step to step means a
//! socket's cost does not grow with the number of sockets beside it.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use super::Ctx;
use crate::{
    cli::Scenario,
    fleet::{self, Fleet},
    procfs,
    recorder::Recorder,
    report::Report,
    usage::Probe,
};

const STEPS: [usize; 4] = [1_000, 5_000, 10_000, 19_000];
const SETTLE: Duration = Duration::from_secs(2);
const IDLE_CPU_WINDOW: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// One step's reading.
#[derive(Debug, Serialize)]
struct Step {
    sockets: usize,
    /// What this step's sockets added, per socket.
    added_rss_per_socket_bytes: f64,
    /// Over the edge's memory before the first socket, per socket so far.
    rss_per_socket_bytes: f64,
    /// The edge's CPU while this step's sockets connected, per socket.
    connect_cpu_us_per_socket: f64,
    /// The edge's CPU over the idle window, in microseconds per socket per second.
    cpu_us_per_socket_per_sec: f64,
    other_busy: bool,
}

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let stack = ctx.start_stack(Scenario::IdleScaling, true).await?;
    let edge_pid = stack.edge_pids()[0];
    let total = ctx.sockets(STEPS[STEPS.len() - 1]);
    let mut specs = fleet::plan(&stack, total, None, None)?;
    for spec in &mut specs {
        spec.edge = stack.edges[0].addr;
    }
    let before = procfs::rss_bytes(edge_pid).context("edge memory")?;
    let probe = Probe::new(vec![("edge-a".to_owned(), edge_pid)]);
    let mut fleets: Vec<Fleet> = Vec::new();
    let mut steps = Vec::new();
    let (mut connected, mut last_rss) = (0, before);
    for step in STEPS.map(|n| ctx.sockets(n)) {
        let added = step - connected;
        let batch: Vec<_> = specs.drain(..added).collect();
        let recorder = Arc::new(Recorder::new());
        let connecting = probe.sample();
        let fleet = Fleet::spawn(batch, fleet::CONNECT_CONCURRENCY, &recorder);
        fleet.wait_welcomed(&recorder, CONNECT_TIMEOUT).await?;
        let connect_cpu_s = probe.between(&connecting, &probe.sample()).server_cpu_s;
        fleets.push(fleet);
        connected = step;
        tokio::time::sleep(SETTLE).await;
        let rss = procfs::rss_bytes(edge_pid).context("edge memory")?;
        let added_rss = (rss as f64 - last_rss as f64) / added as f64;
        last_rss = rss;
        let start = probe.sample();
        tokio::time::sleep(IDLE_CPU_WINDOW).await;
        let usage = probe.between(&start, &probe.sample());
        let cpu_s = usage.server_cpu_s;
        steps.push(Step {
            sockets: step,
            added_rss_per_socket_bytes: added_rss,
            connect_cpu_us_per_socket: connect_cpu_s * 1e6 / added as f64,
            rss_per_socket_bytes: (rss as f64 - before as f64) / step as f64,
            cpu_us_per_socket_per_sec: cpu_s * 1e6 / usage.wall_s / step as f64,
            other_busy: usage.other_busy().busy,
        });
    }
    report.sockets = connected;
    if let Some(last) = steps.last() {
        report.server_rss_per_socket_bytes = Some(last.rss_per_socket_bytes);
    }
    // Flatness: the largest over the smallest, minus one, of what each step added per socket;
    // for memory from the second step on, the first also holding the edge's one-off growth.
    let rss: Vec<f64> = steps
        .iter()
        .skip(1)
        .map(|s| s.added_rss_per_socket_bytes)
        .collect();
    let connect_cpu: Vec<f64> = steps.iter().map(|s| s.connect_cpu_us_per_socket).collect();
    let spread = |values: &[f64]| {
        let (min, max) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        if min > 0.0 { max / min - 1.0 } else { f64::NAN }
    };
    report.extra("added_rss_spread", spread(&rss));
    report.extra("connect_cpu_spread", spread(&connect_cpu));
    report.extra("steps", &steps);
    for fleet in fleets {
        fleet.close().await;
    }
    Ok(())
}
