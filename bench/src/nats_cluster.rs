//! The `cluster` scenario's NATS: three nats-servers in one JetStream cluster on loopback, each
//! with its own store under the stack's temporary directory, as `tests/src/cluster.rs` starts
//! them for the fault tests. Routes need every node's cluster port before any node starts, so
//! all nine ports are chosen free up front (a small race, as with any port-0 probe: a node that
//! loses it exits and the stack fails to start, with its log named).

use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::child::Service;

/// Nodes in the cluster.
pub(crate) const NODES: usize = 3;
/// Bound on the cluster electing its meta leader after every node is healthy.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// One started node.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) service: Service,
    /// `nats://127.0.0.1:<port>`
    pub(crate) url: String,
    /// `http://127.0.0.1:<port>`
    pub(crate) monitoring: String,
}

/// Writes each node's configuration under `dir` and starts the three (`nats-n1` … `nats-n3`,
/// logs in `log_dir`). Not waited for: see [`wait_ready`].
pub(crate) fn spawn(nats_server: &Path, dir: &Path, log_dir: &Path) -> anyhow::Result<Vec<Node>> {
    // Held until all are chosen, so no two are the same.
    let listeners = (0..NODES * 3)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)).context("finding a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<u16>, _>>()
        .context("reading a probe port")?;
    drop(listeners);
    let routes = ports
        .chunks(3)
        .map(|p| format!("nats-route://127.0.0.1:{}", p[1]))
        .collect::<Vec<_>>()
        .join(", ");
    let mut nodes = Vec::new();
    for (i, p) in ports.chunks(3).enumerate() {
        let (client, route, http) = (p[0], p[1], p[2]);
        let name = format!("n{}", i + 1);
        let store = dir.join(&name);
        std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
        let config = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
             jetstream {{ store_dir: {store:?} }}\n\
             cluster {{\n  name: herald-bench\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n",
            store = store.join("js"),
        );
        let path = store.join("nats-server.conf");
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        let mut cmd = Command::new(nats_server);
        cmd.arg("-c").arg(&path);
        let service = Service::spawn(&format!("nats-{name}"), cmd, log_dir)?;
        nodes.push(Node {
            service,
            url: format!("nats://127.0.0.1:{client}"),
            monitoring: format!("http://127.0.0.1:{http}"),
        });
    }
    Ok(nodes)
}

#[derive(Deserialize)]
struct Jsz {
    #[serde(default)]
    meta_cluster: Option<MetaCluster>,
}

#[derive(Deserialize)]
struct MetaCluster {
    #[serde(default)]
    leader: String,
}

/// Waits until every node answers `/healthz` (its JetStream current) and all name the same
/// meta leader, failing fast if a node exits.
pub(crate) async fn wait_ready(http: &reqwest::Client, nodes: &mut [Node]) -> anyhow::Result<()> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let mut leaders = Vec::new();
        for node in nodes.iter_mut() {
            if let Some(status) = node.service.exited() {
                bail!(
                    "{} exited ({status}); see {}",
                    node.service.name(),
                    node.service.log().display()
                );
            }
            let healthy = http
                .get(format!("{}/healthz", node.monitoring))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200);
            let leader = async {
                let jsz: Jsz = http
                    .get(format!("{}/jsz", node.monitoring))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                jsz.meta_cluster.map(|m| m.leader).filter(|l| !l.is_empty())
            };
            leaders.push(if healthy { leader.await } else { None });
        }
        if leaders.iter().all(Option::is_some) && leaders.windows(2).all(|w| w[0] == w[1]) {
            for node in nodes.iter_mut() {
                node.service.end_startup_log();
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the NATS cluster elected no meta leader within {LEADER_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Checks that every stream on the cluster (`url`, any node) has `replicas` copies: a run
/// meant to measure R3 that silently ran at R1 would make the ratios meaningless. Returns the
/// streams' names.
pub(crate) async fn check_replicas(url: &str, replicas: usize) -> anyhow::Result<Vec<String>> {
    use futures_util::TryStreamExt as _;
    let client = async_nats::connect(url)
        .await
        .context("connecting to check the streams")?;
    let js = async_nats::jetstream::new(client);
    let streams: Vec<_> = js
        .streams()
        .try_collect()
        .await
        .context("listing the streams")?;
    if streams.is_empty() {
        bail!("no stream on the cluster");
    }
    let mut names = Vec::new();
    for info in streams {
        if info.config.num_replicas != replicas {
            bail!(
                "stream {} has {} replicas, not {replicas}",
                info.config.name,
                info.config.num_replicas
            );
        }
        names.push(info.config.name);
    }
    Ok(names)
}

/// A seed list of every node's URL starting at node `first`, e.g. `b,c,a`: each service gets
/// a different node first and the others as fallbacks.
pub(crate) fn seeds(nodes: &[Node], first: usize) -> String {
    (0..nodes.len())
        .map(|i| nodes[(first + i) % nodes.len()].url.clone())
        .collect::<Vec<_>>()
        .join(",")
}
