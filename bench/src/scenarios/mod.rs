//! The scenarios, one module each, and what every one of them gets: the run's context (where
//! the binaries are, `--quick` sizing) and the wrapper that turns a scenario's outcome, error
//! included, into its report.

mod broadcast;
mod cluster;
mod connect;
mod delivery;
mod diagnostics;
mod idle;
mod idle_presence;
mod idle_scaling;
mod nats_ingest;
mod publisher;
mod publisher_batch;
mod reconnect_storm;
mod rpc;
mod saturation;
mod unicast;

use std::{path::PathBuf, time::Duration};

use crate::{
    cli::{Args, Scenario},
    report::Report,
    stack::{Nats, Stack, StackOptions},
};

/// What every scenario needs from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    nats_server: PathBuf,
    bin_dir: PathBuf,
    out: PathBuf,
    quick: bool,
}

impl Ctx {
    pub(crate) fn new(args: &Args) -> Self {
        Self {
            nats_server: args.nats_server.clone(),
            bin_dir: args.bin_dir.clone(),
            out: args.out.clone(),
            quick: args.quick,
        }
    }

    /// A fresh stack on one nats-server for `scenario`, its logs in `<out>/logs/<scenario>/`.
    pub(crate) async fn start_stack(
        &self,
        scenario: Scenario,
        edges: bool,
    ) -> anyhow::Result<Stack> {
        self.start_stack_on(scenario.name(), edges, Nats::Single)
            .await
    }

    /// A fresh stack on `nats`, its logs in `<out>/logs/<logs>/`.
    pub(crate) async fn start_stack_on(
        &self,
        logs: &str,
        edges: bool,
        nats: Nats,
    ) -> anyhow::Result<Stack> {
        Stack::start(&self.stack_options(logs, edges, nats)).await
    }

    /// The options `start_stack_on` uses, for a scenario that needs more (the calendar service).
    pub(crate) fn stack_options(&self, logs: &str, edges: bool, nats: Nats) -> StackOptions {
        StackOptions {
            nats_server: self.nats_server.clone(),
            bin_dir: self.bin_dir.clone(),
            log_dir: self.out.join("logs").join(logs),
            edges,
            nats,
            edge_env: Vec::new(),
            calendar: None,
        }
    }

    /// `n`, or a fifth of it with `--quick`.
    pub(crate) fn sockets(&self, n: usize) -> usize {
        if self.quick { (n / 5).max(1) } else { n }
    }

    /// `window`, or 2 s with `--quick`.
    pub(crate) fn window(&self, window: Duration) -> Duration {
        if self.quick {
            Duration::from_secs(2)
        } else {
            window
        }
    }

    pub(crate) fn quick(&self) -> bool {
        self.quick
    }
}

/// Runs one scenario; an error ends it early and goes into the report with what was measured
/// so far.
pub(crate) async fn run(scenario: Scenario, ctx: &Ctx) -> Report {
    let started = std::time::Instant::now();
    let mut report = Report::new(scenario.name());
    let result = match scenario {
        Scenario::Idle => idle::run(ctx, &mut report).await,
        Scenario::IdlePresence => idle_presence::run(ctx, &mut report).await,
        Scenario::IdleScaling => idle_scaling::run(ctx, &mut report).await,
        Scenario::Unicast => unicast::run(ctx, &mut report).await,
        Scenario::Broadcast1k => broadcast::run(ctx, scenario, 1_000, &mut report).await,
        Scenario::Broadcast5k => broadcast::run(ctx, scenario, 5_000, &mut report).await,
        Scenario::Saturation => saturation::run(ctx, &mut report).await,
        Scenario::Publisher => publisher::run(ctx, &mut report).await,
        Scenario::PublisherBatch => publisher_batch::run(ctx, &mut report).await,
        Scenario::NatsIngest => nats_ingest::run(ctx, &mut report).await,
        Scenario::ReconnectStorm => reconnect_storm::run(ctx, &mut report).await,
        Scenario::Cluster => cluster::run(ctx, &mut report).await,
        Scenario::Rpc => rpc::run(ctx, &mut report).await,
    };
    if let Err(err) = result {
        report.error = Some(format!("{err:#}"));
    }
    report.wall_seconds = started.elapsed().as_secs_f64();
    report
}
