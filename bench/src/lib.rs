//! herald-bench: a load generator for Herald that starts the real services as child processes
//! and measures them from the outside, as browsers and domain services see them.
//!
//! Module map: `cli` (arguments, scenario names), `stack` and `child` (nats-server, publisher,
//! edges as processes killed on drop; `nats_cluster` the 3-node NATS of `cluster`), `tokens`
//! (the HS256 secret and JWTs), `socket` and `fleet` (WebSocket clients), `caller` and `calls`
//! (sockets that make `rpc` calls, and their tally), `frame` (reading server frames),
//! `recorder` (deliveries and latencies), `publish` (HTTP publishing), `clock` (the one time
//! base), `procfs` and `usage` (memory and CPU from `/proc`), `report` (JSON lines and the
//! markdown table), `scenarios` (one module per scenario, plus what they share).

mod caller;
mod calls;
mod child;
mod cli;
mod clock;
mod fleet;
mod frame;
mod nats_cluster;
mod procfs;
mod progress;
mod publish;
mod recorder;
mod report;
mod scenarios;
mod socket;
mod stack;
mod tokens;
mod usage;

use std::{sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use tokio::signal::unix::{SignalKind, signal};

pub use crate::cli::{Args, Scenario};
use crate::{report::Report, scenarios::Ctx};

/// No scenario may run longer than this; past it, it is stopped and reported as failed.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Raises the soft open-files limit to the hard one and returns the new soft limit.
///
/// # Errors
/// The limit cannot be read or set.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Runs the scenarios `args` names (all by default), one after another, each against its own
/// fresh stack. Each result line goes to `emit` and to the files in `args.out` as soon as its
/// scenario ends.
///
/// # Errors
/// A binary is missing, the results cannot be written, or the run was interrupted (Ctrl-C).
pub async fn run(args: Args, mut emit: impl FnMut(&str)) -> anyhow::Result<()> {
    clock::now_ns();
    for path in [
        args.nats_server.clone(),
        args.bin_dir.join("herald-publisher"),
        args.bin_dir.join("herald-edge"),
    ] {
        if !path.is_file() {
            bail!("{} not found", path.display());
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let calendar = args.bin_dir.join("calendar-service");
    if scenarios.contains(&Scenario::Rpc) && !calendar.is_file() {
        bail!(
            "{} not found (the rpc scenario calls it; cargo build -p calendar-service)",
            calendar.display()
        );
    }
    let ctx = Arc::new(Ctx::new(&args));
    for scenario in scenarios {
        progress::note(&format!("{scenario}: starting"));
        let report = run_guarded(scenario, ctx.clone()).await?;
        let line = report.to_line();
        emit(&line);
        report::write(&args.out, &line)?;
        progress::note(&format!(
            "{scenario}: done in {:.1} s{}",
            report.wall_seconds,
            report
                .error
                .as_deref()
                .map(|e| format!(" (error: {e})"))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// Runs one scenario in its own task, so a panic or the time limit ends only it (its stack is
/// dropped, and its processes killed, either way); Ctrl-C or SIGTERM ends the whole run the
/// same way.
async fn run_guarded(scenario: Scenario, ctx: Arc<Ctx>) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let mut task = tokio::spawn(async move {
        tokio::time::timeout(SCENARIO_TIMEOUT, scenarios::run(scenario, &ctx)).await
    });
    let mut terminate = signal(SignalKind::terminate()).context("watching for SIGTERM")?;
    let joined = tokio::select! {
        joined = &mut task => joined,
        _ = tokio::signal::ctrl_c() => {
            task.abort();
            let _ = task.await;
            bail!("interrupted (SIGINT) during {scenario}");
        }
        _ = terminate.recv() => {
            task.abort();
            let _ = task.await;
            bail!("terminated (SIGTERM) during {scenario}");
        }
    };
    let failed = |error: String| {
        let mut report = Report::new(scenario.name());
        report.error = Some(error);
        report.wall_seconds = started.elapsed().as_secs_f64();
        report
    };
    Ok(match joined {
        Ok(Ok(report)) => report,
        Ok(Err(_)) => failed(format!("timed out after {SCENARIO_TIMEOUT:?}")),
        Err(err) => failed(format!("panicked: {err}")),
    })
}
