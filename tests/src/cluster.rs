//! Three real nats-servers in one JetStream cluster on loopback, each with a
//! temporary store, each killable, stoppable (to make a lagging replica) and
//! restartable on its store; killed and cleaned up on drop.
//!
//! Routes need every node's cluster port before any node starts, so all ports
//! are chosen free up front (bind to port 0, then let go); if another process
//! takes one in between, the whole cluster is started again on new ports.
//!
//! [`NatsCluster::start_least_privilege`] starts it with the one account and
//! the least-privilege users of [`crate::permissions`] (plus the harness's
//! admin): the services connect as `edge`, `publisher` and `domain-service`
//! ([`NatsCluster::seeds`], [`NatsCluster::auth`]), the test's own checks as
//! [`permissions::ADMIN`] ([`NatsCluster::admin`]).

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde::Deserialize;
use tempfile::TempDir;

use crate::{nats::binary, permissions};

/// Nodes in the cluster.
pub const NODES: usize = 3;
/// Attempts at starting the cluster on fresh ports.
const START_ATTEMPTS: u32 = 3;

/// A three-node JetStream cluster.
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<ClusterNode>,
    /// Whether it runs [`permissions::least_privilege_config_with_admin`]
    /// (else anyone may connect, to the default account).
    least_privilege: bool,
}

/// One node: its process, store and configuration survive restarts.
#[derive(Debug)]
pub struct ClusterNode {
    /// `n1`, `n2`, `n3`: the server name (`/jsz`'s leader names).
    pub name: String,
    /// `nats://127.0.0.1:<port>`
    pub url: String,
    /// `http://127.0.0.1:<port>`, the monitoring endpoint.
    pub monitoring: String,
    child: Option<Child>,
    config: PathBuf,
    /// The store and the config file; removed on drop.
    _dir: TempDir,
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

impl NatsCluster {
    /// Starts three nodes and waits until the cluster is ready
    /// ([`NatsCluster::wait_ready`]).
    ///
    /// # Panics
    /// No nats-server binary, or the cluster is not ready within the bounds.
    pub async fn start() -> Self {
        Self::start_as(false).await
    }

    /// As [`NatsCluster::start`], with one account and only the
    /// least-privilege users (and the harness's admin) allowed in.
    ///
    /// # Panics
    /// As [`NatsCluster::start`].
    pub async fn start_least_privilege() -> Self {
        Self::start_as(true).await
    }

    async fn start_as(least_privilege: bool) -> Self {
        // Its health checks are reqwest clients: they need the crypto
        // provider the services install (a test may start a cluster first).
        herald_shared::telemetry::init_for_tests();
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = Self::spawn(least_privilege);
            let deadline = Instant::now() + crate::WAIT * 2;
            // A node that exits (a port taken meanwhile) fails the attempt at once.
            while Instant::now() < deadline && !cluster.exited() {
                if cluster.ready().await {
                    return cluster;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            for node in &cluster.nodes {
                tracing::warn!(attempt, node = %node.name, log = %node.log(), "The cluster did not come up.");
            }
        }
        panic!("a nats-server cluster did not become ready in {START_ATTEMPTS} attempts");
    }

    fn spawn(least_privilege: bool) -> Self {
        // Held until all are chosen, so no two are the same.
        let listeners: Vec<TcpListener> = (0..NODES * 3).map(|_| free_port()).collect();
        let ports: Vec<[u16; 3]> = listeners
            .chunks(3)
            .map(|l| [port(&l[0]), port(&l[1]), port(&l[2])])
            .collect();
        drop(listeners);
        let routes = ports
            .iter()
            .map(|[_, route, _]| format!("nats-route://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(", ");
        let accounts = if least_privilege {
            permissions::least_privilege_config_with_admin()
        } else {
            String::new()
        };
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, [client, route, http])| {
                let dir = TempDir::new().expect("temp dir");
                let store = dir.path().join("store");
                let name = format!("n{}", i + 1);
                let config = format!(
                    "server_name: {name}\n\
                     listen: 127.0.0.1:{client}\n\
                     http: 127.0.0.1:{http}\n\
                     jetstream {{ store_dir: {store:?} }}\n\
                     lame_duck_grace_period: 1s\n\
                     cluster {{\n  name: herald\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n\
                     {accounts}",
                );
                let path = dir.path().join("nats-server.conf");
                std::fs::write(&path, config).expect("writing the nats-server config");
                let mut node = ClusterNode {
                    name,
                    url: format!("nats://127.0.0.1:{client}"),
                    monitoring: format!("http://127.0.0.1:{http}"),
                    child: None,
                    config: path,
                    _dir: dir,
                };
                node.spawn();
                node
            })
            .collect();
        Self {
            nodes,
            least_privilege,
        }
    }

    /// Every node's client URL: a seed list for the services.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// A seed list (`--nats-url a,b,c`) of the nodes named `names`, in this
    /// order, each URL with `user`'s name and password when the cluster
    /// runs least privilege.
    ///
    /// # Panics
    /// No node of one of the names.
    pub fn seeds(&self, user: &str, names: &[&str]) -> String {
        names
            .iter()
            .map(|name| {
                let node = self
                    .nodes
                    .iter()
                    .find(|n| n.name == *name)
                    .unwrap_or_else(|| panic!("no node {name}"));
                if self.least_privilege {
                    permissions::with_credentials(&node.url, user)
                } else {
                    node.url.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The connection options of `user` besides its URL (its inbox prefix).
    pub fn auth(&self, user: &str) -> herald_shared::nats::NatsAuth {
        if self.least_privilege {
            permissions::auth_for(user)
        } else {
            herald_shared::nats::NatsAuth::default()
        }
    }

    /// A client as `user` on the seed list of `names`, connected as Herald
    /// connects.
    ///
    /// # Panics
    /// It cannot connect in time.
    pub async fn connect_as(&self, user: &str, names: &[&str]) -> async_nats::Client {
        let seeds = self.seeds(user, names);
        tokio::time::timeout(
            crate::WAIT,
            herald_shared::nats::connect(&seeds, &self.auth(user), user, None),
        )
        .await
        .unwrap_or_else(|_| panic!("{user} not connected in time"))
        .unwrap_or_else(|err| panic!("connecting as {user}: {err:#}"))
    }

    /// JetStream as the harness's admin, on every running node: for checks
    /// no service's user may make.
    ///
    /// # Panics
    /// As [`NatsCluster::connect_as`].
    pub async fn admin(&self) -> async_nats::jetstream::Context {
        let names: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.name.as_str())
            .collect();
        async_nats::jetstream::new(self.connect_as(permissions::ADMIN, &names).await)
    }

    /// The publisher configuration with every stream at three replicas, as
    /// the `publisher` user on the seed list of `names`.
    pub fn publisher_on(&self, names: &[&str]) -> herald_publisher::Config {
        herald_publisher::Config {
            nats_auth: self.auth("publisher"),
            ..replicated_publisher(&self.seeds("publisher", names))
        }
    }

    /// The edge configuration `node_id`, as the `edge` user on the seed
    /// list of `names`.
    pub fn edge_on(&self, names: &[&str], node_id: &str) -> herald_edge::Config {
        herald_edge::Config {
            nats_auth: self.auth("edge"),
            ..crate::apps::edge_config_on(&self.seeds("edge", names), node_id)
        }
    }

    /// The permission violations every node logged so far (across
    /// restarts): a service's user lacking a permission it needs shows here
    /// first, since the server only drops the message or subscription and
    /// tells the client, whose log a test does not read.
    pub fn permission_violations(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|node| {
                node.log()
                    .lines()
                    .filter(|line| line.contains("Violation"))
                    .map(|line| format!("{}: {line}", node.name))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// # Panics
    /// A node logged a permission violation.
    pub fn assert_no_permission_violations(&self) {
        let violations = self.permission_violations();
        assert!(
            violations.is_empty(),
            "permission violations:\n{}",
            violations.join("\n")
        );
    }

    /// Every node's name, in order.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Waits until every running node answers `/healthz` (JetStream
    /// current) and names the same meta leader.
    ///
    /// # Panics
    /// Not within [`crate::WAIT`] times two.
    pub async fn wait_ready(&self) {
        assert!(
            self.wait_ready_for(crate::WAIT * 2).await,
            "the cluster did not become ready in time"
        );
    }

    async fn wait_ready_for(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if self.ready().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn exited(&mut self) -> bool {
        self.nodes.iter_mut().any(|n| {
            n.child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
        })
    }

    async fn ready(&self) -> bool {
        let mut leaders = Vec::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            if !node.healthy().await {
                return false;
            }
            match node.meta_leader().await {
                Some(leader) => leaders.push(leader),
                None => return false,
            }
        }
        leaders.windows(2).all(|w| w[0] == w[1])
    }

    /// The name of the node that leads `stream` (of any account), as any
    /// running node reports it.
    pub async fn stream_leader(&self, stream: &str) -> Option<String> {
        #[derive(Deserialize)]
        struct Jsz {
            #[serde(default)]
            account_details: Vec<Account>,
        }
        #[derive(Deserialize)]
        struct Account {
            #[serde(default)]
            stream_detail: Vec<Stream>,
        }
        #[derive(Deserialize)]
        struct Stream {
            name: String,
            #[serde(default)]
            cluster: Option<Cluster>,
        }
        #[derive(Deserialize)]
        struct Cluster {
            #[serde(default)]
            leader: String,
        }
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let url = format!("{}/jsz?streams=true", node.monitoring);
            let Some(jsz) = get_json::<Jsz>(&url).await else {
                continue;
            };
            let leader = jsz
                .account_details
                .iter()
                .flat_map(|a| &a.stream_detail)
                .find(|s| s.name == stream)
                .and_then(|s| s.cluster.as_ref())
                .map(|c| c.leader.clone())
                .filter(|l| !l.is_empty());
            if leader.is_some() {
                return leader;
            }
        }
        None
    }

    /// The node named `name`.
    ///
    /// # Panics
    /// No such node.
    pub fn node(&mut self, name: &str) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }
}

// === impl ClusterNode ===

impl ClusterNode {
    // The child is kept in `self.child`; `kill` (and so `Drop`) waits for it.
    #[allow(clippy::zombie_processes)]
    fn spawn(&mut self) {
        // Its log, appended across restarts, for a failing test to show.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.with_file_name("nats-server.log"))
            .expect("opening the node's log");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", binary().display()));
        self.child = Some(child);
    }

    /// What the server logged so far (across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("nats-server.log")).unwrap_or_default()
    }

    /// Whether the process runs (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: a crash. The store stays for [`ClusterNode::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGUSR2: lame-duck mode, as an operator stops a node for a rolling
    /// restart: it takes no new clients, hands its JetStream leaderships
    /// over, closes its clients one by one (after a 1 s grace period) and
    /// exits. Waits (bounded) until it has exited.
    ///
    /// # Panics
    /// Not gone within [`crate::WAIT`] times two.
    pub async fn lame_duck(&mut self) {
        self.signal("-USR2");
        let deadline = Instant::now() + crate::WAIT * 2;
        let mut child = self.child.take().expect("a running node");
        while !matches!(child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} still ran in lame-duck mode", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            self.log().contains("lame duck mode"),
            "{} exited, but not in lame-duck mode",
            self.name
        );
    }

    /// Starts it again on the same ports and store (after [`kill`]), and
    /// waits until it answers `/healthz`.
    ///
    /// [`kill`]: ClusterNode::kill
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        let deadline = Instant::now() + crate::WAIT * 2;
        while !self.healthy().await {
            assert!(
                Instant::now() < deadline,
                "{} did not come back in time",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGSTOP: the process freezes with its connections open, so its
    /// replicas fall behind while the others go on.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`ClusterNode::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running node").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// `/healthz` answers 200: the server runs and its JetStream is current.
    pub async fn healthy(&self) -> bool {
        let client = crate::http_client(Duration::from_secs(1));
        matches!(
            client.get(format!("{}/healthz", self.monitoring)).send().await,
            Ok(r) if r.status() == 200
        )
    }

    /// The meta leader's name as this node sees it, if there is one.
    pub async fn meta_leader(&self) -> Option<String> {
        get_json::<Jsz>(&format!("{}/jsz", self.monitoring))
            .await?
            .meta_cluster
            .map(|m| m.leader)
            .filter(|l| !l.is_empty())
    }
}

/// Waits until `stream` has `replicas` copies, each current.
pub async fn wait_for_replicas(js: &async_nats::jetstream::Context, stream: &str, replicas: usize) {
    let settled = async {
        loop {
            if let Ok(mut s) = js.get_stream(stream).await
                && let Ok(info) = s.info().await
                && info.config.num_replicas == replicas
                && let Some(cluster) = &info.cluster
                && cluster.leader.is_some()
                && cluster.replicas.len() == replicas - 1
                && cluster.replicas.iter().all(|r| r.current)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(crate::WAIT * 2, settled)
        .await
        .unwrap_or_else(|_| panic!("{stream} not at {replicas} replicas in time"));
}

/// The publisher configuration with every stream at three replicas.
pub fn replicated_publisher(url: &str) -> herald_publisher::Config {
    let mut config = crate::apps::publisher_config_on(url);
    config.stream.replicas = 3;
    config.ingest.as_mut().unwrap().replicas = 3;
    config
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A GET answered with JSON within a second, else `None`.
async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Option<T> {
    let client = crate::http_client(Duration::from_secs(1));
    client.get(url).send().await.ok()?.json().await.ok()
}

/// A port free right now (the OS's choice), held until dropped; taken by
/// someone else by the time the server binds only by a rare race, which
/// [`NatsCluster::start`] retries.
fn free_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("a free port")
}

fn port(listener: &TcpListener) -> u16 {
    listener.local_addr().expect("a bound port").port()
}
