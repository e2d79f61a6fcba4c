//! `idle-presence`: the `idle` scenario's 10,000 sockets (one user each, 5,000 per edge), each
//! joined to its team's namespace (`team-<n>`, 10 users a team, 5 on each edge), and no events:
//! what presence costs NATS while nobody comes or goes. An edge writes one presence message per
//! namespace with users on it, on a change and as a heartbeat every `--presence-ttl-ms` / 3
//! (10 s by default); the edges' `herald_edge_presence_writes_total`, read before and after a
//! window, gives the writes per second. `idle` itself joins no namespace, so its memory figures
//! stay comparable between runs.

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use super::{Ctx, diagnostics};
use crate::{
    cli::Scenario,
    fleet::{CONNECT_CONCURRENCY, Fleet},
    recorder::Recorder,
    report::Report,
    socket::SocketSpec,
    stack::Stack,
    usage::Probe,
};

const SOCKETS: usize = 10_000;
const TEAM_SIZE: usize = 10;
/// Joins are written within a tick (250 ms); after this only heartbeats remain.
const SETTLE: Duration = Duration::from_secs(2);
/// One default TTL: every (edge, namespace) heartbeats three times in it.
const WINDOW: Duration = Duration::from_secs(30);
/// The edges' heartbeat at the default TTL.
const HEARTBEAT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// Source addresses 127.0.0.2 up to this many (as `fleet::plan`).
const SOURCE_ADDRESSES: usize = 8;

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mut stack = ctx.start_stack(Scenario::IdlePresence, true).await?;
    let recorder = Arc::new(Recorder::new());
    let result = async {
        let n_sockets = ctx.sockets(SOCKETS);
        let fleet = Fleet::spawn(plan(&stack, n_sockets)?, CONNECT_CONCURRENCY, &recorder);
        let took = fleet.wait_welcomed(&recorder, CONNECT_TIMEOUT).await?;
        report.sockets = n_sockets;
        report.extra("connect_seconds", took.as_secs_f64());
        tokio::time::sleep(SETTLE).await;
        let probe = Probe::new(stack.server_pids());
        let before = writes(&stack).await?;
        let start = probe.sample();
        // Even with `--quick`, one whole heartbeat period (TTL / 3 by default).
        let window = ctx.window(WINDOW).max(HEARTBEAT);
        tokio::time::sleep(window).await;
        let after = writes(&stack).await?;
        let usage = probe.between(&start, &probe.sample());
        let per_sec = after.saturating_sub(before) as f64 / window.as_secs_f64();
        report.extra("presence_namespaces", n_sockets.div_ceil(TEAM_SIZE));
        report.extra("presence_writes_per_sec", per_sec);
        report.extra(
            "presence_writes_per_socket_per_sec",
            per_sec / n_sockets.max(1) as f64,
        );
        report.cpu(&usage);
        fleet.close().await;
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, Some(&recorder), report).await;
    result
}

/// User `u<i>` joined to `team-<i / TEAM_SIZE>`, round-robin over the edges.
fn plan(stack: &Stack, n_sockets: usize) -> anyhow::Result<Vec<SocketSpec>> {
    let n_edges = stack.edges.len();
    anyhow::ensure!(n_edges > 0, "this scenario needs edges");
    (0..n_sockets)
        .map(|index| {
            let user = format!("u{index}");
            let team = format!("team-{}", index / TEAM_SIZE);
            let token = stack.keys.user_token(&user, &[&team])?;
            let host = 2 + (index / n_edges) % SOURCE_ADDRESSES;
            Ok(SocketSpec {
                index,
                edge: stack.edges[index % n_edges].addr,
                source: Ipv4Addr::new(127, 0, 0, u8::try_from(host).unwrap_or(2)),
                path_and_query: format!("/v1/ws?token={token}&ns={team}"),
                since: None,
            })
        })
        .collect()
}

/// Presence writes of every edge so far.
async fn writes(stack: &Stack) -> anyhow::Result<u64> {
    let mut total = 0;
    for text in stack.edge_metrics().await {
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix("herald_edge_presence_writes_total "))
            .ok_or_else(|| {
                anyhow::anyhow!("an edge reports no herald_edge_presence_writes_total")
            })?;
        total += value.trim().parse::<u64>()?;
    }
    Ok(total)
}
