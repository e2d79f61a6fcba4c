//! `reconnect-storm`: 10,000 sockets (users `u0`…) connect and keep their cursors; all close at
//! once (client side); while they are away one event goes to each of the first 1,000 users;
//! then all 10,000 reconnect at once, each resuming its user channel from its cursor
//! (`since` and `epoch` at connect). Measured: the time from the first reconnect until every
//! socket has its welcome and every missed event has arrived, and whether any was lost or
//! delivered twice.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    Ctx,
    connect::connect,
    diagnostics::{self, sum_samples},
    unicast::{HTTP_CONNECTIONS, SETTLE},
};
use crate::{
    cli::Scenario,
    fleet::{self, Fleet, Resume},
    publish,
    recorder::Recorder,
    report::Report,
    usage::Probe,
};

const SOCKETS: usize = 10_000;
/// Users who get one event while away.
const MISSED: usize = 1_000;
/// Rate the missed events are published at (they only need to be stored).
const AWAY_RATE: f64 = 2_000.0;
const CLOSED_TIMEOUT: Duration = Duration::from_secs(60);
const RESUME_TIMEOUT: Duration = Duration::from_secs(180);
/// Deliveries that stop for this long, after every welcome, are all there will be.
const STALL: Duration = Duration::from_secs(5);
/// After everything arrived: time for duplicates to show up.
const LINGER: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(10);

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mut stack = ctx.start_stack(Scenario::ReconnectStorm, true).await?;
    let recorder = Arc::new(Recorder::new());
    let result = async {
        let n_sockets = ctx.sockets(SOCKETS);
        let n_missed = ctx.sockets(MISSED);
        let fleet = connect(&stack, &recorder, n_sockets, None, None, SETTLE, report).await?;

        // Everyone leaves at once, keeping their cursors.
        let ends = fleet.close().await;
        let epoch = ends
            .iter()
            .find_map(|end| end.epoch.clone())
            .context("no socket was welcomed")?;
        let mut user_seqs = vec![0; n_sockets];
        for end in &ends {
            user_seqs[end.index] = end.user_seq;
        }
        let closed_in = wait_until_edges_empty(&stack).await?;
        report.extra("edges_emptied_seconds", closed_in.as_secs_f64());

        // Events they miss.
        let publisher = stack.http_publisher(HTTP_CONNECTIONS)?;
        let tally = publish::paced(
            publisher,
            AWAY_RATE,
            Duration::from_secs_f64(n_missed as f64 / AWAY_RATE),
            HTTP_CONNECTIONS,
            publish::to_one_user(n_missed as u64),
        )
        .await;
        report.events_published = tally.accepted;
        report.publish_errors = tally.n_errors();
        if tally.accepted != n_missed as u64 {
            bail!(
                "only {} of {n_missed} missed events were accepted: {:?} {:?}",
                tally.accepted,
                tally.errors,
                tally.first_error
            );
        }

        // Everyone comes back at once, resuming.
        recorder.reset();
        let resume = Resume { epoch, user_seqs };
        let specs = fleet::plan(&stack, n_sockets, None, Some(&resume))?;
        let probe = Probe::new(stack.server_pids());
        let start_sample = probe.sample();
        let started = Instant::now();
        let fleet = Fleet::spawn(specs, n_sockets, &recorder);
        let outcome = wait_resumed(&recorder, n_sockets as u64, n_missed as u64, started).await;
        let end_sample = probe.sample();
        tokio::time::sleep(LINGER).await;
        let snapshot = recorder.snapshot();
        let usage = probe.between(&start_sample, &end_sample);

        report.deliveries_expected = n_missed as u64;
        report.delivered = snapshot.delivered;
        report.lost = (n_missed as u64).saturating_sub(snapshot.delivered);
        report.duplicated = snapshot.duplicated;
        report.cpu(&usage);
        report.extra("resumed", recorder.n_welcomed());
        report.extra("resume_failed", recorder.n_failed());
        report.extra("resume_seconds", outcome.done.map(|d| d.as_secs_f64()));
        report.extra(
            "all_welcomed_seconds",
            outcome.all_welcomed.map(|d| d.as_secs_f64()),
        );
        report.extra(
            "server_cpu_ms_per_resume",
            usage.server_cpu_s * 1e3 / n_sockets as f64,
        );
        fleet.close().await;
        if outcome.done.is_none() {
            bail!(
                "the resume did not complete: {} of {n_sockets} welcomed, {} failed, {} of {n_missed} missed events delivered",
                recorder.n_welcomed(),
                recorder.n_failed(),
                snapshot.delivered
            );
        }
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, Some(&recorder), report).await;
    result
}

/// When the resume reached its milestones, measured from `started`.
#[derive(Debug, Default)]
struct ResumeOutcome {
    all_welcomed: Option<Duration>,
    done: Option<Duration>,
}

async fn wait_resumed(
    recorder: &Recorder,
    n_sockets: u64,
    n_missed: u64,
    started: Instant,
) -> ResumeOutcome {
    let mut outcome = ResumeOutcome::default();
    let mut delivered = 0;
    let mut last_progress = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        let now = Instant::now();
        if outcome.all_welcomed.is_none()
            && recorder.n_welcomed() + recorder.n_failed() >= n_sockets
        {
            outcome.all_welcomed = Some(started.elapsed());
        }
        let now_delivered = recorder.n_delivered();
        if now_delivered != delivered {
            delivered = now_delivered;
            last_progress = now;
        }
        if outcome.all_welcomed.is_some() {
            if delivered >= n_missed && recorder.n_failed() == 0 {
                outcome.done = Some(started.elapsed());
                return outcome;
            }
            if now.duration_since(last_progress) > STALL {
                return outcome;
            }
        }
        if started.elapsed() > RESUME_TIMEOUT {
            return outcome;
        }
    }
}

/// Waits until both edges report no open WebSocket, so the events published next are missed.
async fn wait_until_edges_empty(stack: &crate::stack::Stack) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let open: f64 = stack
            .edge_metrics()
            .await
            .iter()
            .map(|text| sum_samples(text, "herald_edge_connections"))
            .sum();
        if open == 0.0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > CLOSED_TIMEOUT {
            bail!("the edges still count {open} open sockets {CLOSED_TIMEOUT:?} after the close");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
