//! Connecting a scenario's sockets while watching the servers' memory: the edges' (and NATS's,
//! and this process's) resident memory before the first socket and after the last `welcome`
//! plus a settle time, per socket.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;

use crate::{
    fleet::{self, Fleet, Resume},
    procfs,
    recorder::Recorder,
    report::Report,
    stack::Stack,
};

/// Bound on connecting every socket of a scenario.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// Opens `n_sockets` sockets (users `u0…`, joined to `namespace` if given), waits for every
/// welcome and `settle`, and puts the memory per socket and the connect time in `report`.
pub(crate) async fn connect(
    stack: &Stack,
    recorder: &Arc<Recorder>,
    n_sockets: usize,
    namespace: Option<&str>,
    resume: Option<&Resume>,
    settle: Duration,
    report: &mut Report,
) -> anyhow::Result<Fleet> {
    let before = Memory::read(stack)?;
    let specs = fleet::plan(stack, n_sockets, namespace, resume)?;
    let fleet = Fleet::spawn(specs, fleet::CONNECT_CONCURRENCY, recorder);
    let took = fleet.wait_welcomed(recorder, CONNECT_TIMEOUT).await?;
    tokio::time::sleep(settle).await;
    let after = Memory::read(stack)?;
    let per_socket = |a: u64, b: u64| (b as f64 - a as f64) / n_sockets.max(1) as f64;
    report.sockets = n_sockets;
    report.server_rss_per_socket_bytes = Some(per_socket(before.edges, after.edges));
    report.extra(
        "nats_rss_per_socket_bytes",
        per_socket(before.nats, after.nats),
    );
    report.extra(
        "loadgen_rss_per_socket_bytes",
        per_socket(before.own, after.own),
    );
    report.extra("edge_rss_after_bytes", after.edges);
    report.extra("connect_seconds", took.as_secs_f64());
    report.extra(
        "connects_per_sec",
        n_sockets as f64 / took.as_secs_f64().max(1e-9),
    );
    Ok(fleet)
}

/// Resident memory of the edges (summed), NATS (every node, summed) and this process.
#[derive(Debug, Clone, Copy)]
struct Memory {
    edges: u64,
    nats: u64,
    own: u64,
}

impl Memory {
    fn read(stack: &Stack) -> anyhow::Result<Self> {
        let mut edges = 0;
        for pid in stack.edge_pids() {
            edges += procfs::rss_bytes(pid).context("edge memory")?;
        }
        let mut nats = 0;
        for pid in stack.nats_pids() {
            nats += procfs::rss_bytes(pid).context("nats memory")?;
        }
        Ok(Self {
            edges,
            nats,
            own: procfs::rss_bytes(std::process::id()).context("own memory")?,
        })
    }
}
