//! The system under test, started fresh per scenario: one nats-server with JetStream on a new
//! temporary store (or, for the `cluster` scenario, a 3-node JetStream cluster with every
//! stream at three replicas), the real `herald-publisher`, zero or two `herald-edge`
//! processes and, for the `rpc` scenario, replicas of the example `calendar-service`,
//! configured through their environment variables as `cargo xtask e2e` does. Dropping the
//! stack kills them all (edges first) and removes the store.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tempfile::TempDir;

use crate::{child::Service, nats_cluster, publish::HttpPublisher, tokens::Keys};

/// How long a service may take to answer its readiness check.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const READY_POLL: Duration = Duration::from_millis(50);
/// The edges' names (`HERALD_NODE_ID`).
const EDGE_NAMES: [&str; 2] = ["edge-a", "edge-b"];

/// Where the binaries are and where their logs go.
#[derive(Debug, Clone)]
pub(crate) struct StackOptions {
    pub(crate) nats_server: PathBuf,
    pub(crate) bin_dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    /// Start the two edges (scenarios without sockets leave them out).
    pub(crate) edges: bool,
    /// One nats-server, or a cluster.
    pub(crate) nats: Nats,
    /// More environment for the edges, e.g. looser client frame limits.
    pub(crate) edge_env: Vec<(&'static str, String)>,
    /// Start the example calendar service behind the edges' `rpc` relay.
    pub(crate) calendar: Option<CalendarOptions>,
}

/// How the example calendar service runs in the stack.
#[derive(Debug, Clone)]
pub(crate) struct CalendarOptions {
    /// Replicas in one queue group: each call goes to one of them.
    pub(crate) replicas: usize,
    /// `HERALD_CALENDAR_MEMBERS`: `CALENDAR=USER,…`, seeded at start-up (the service only
    /// lets members list or change a calendar).
    pub(crate) members: String,
}

/// What NATS the services run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nats {
    /// One nats-server; streams at one replica.
    Single,
    /// Three nats-servers in one JetStream cluster; the publisher runs with
    /// `--stream-replicas 3`, and the publisher and each edge have the whole cluster as their
    /// seed list, each starting at another node (publisher n1, edge-a n2, edge-b n3).
    Cluster,
}

impl Nats {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Nats::Single => "single",
            Nats::Cluster => "r3",
        }
    }
}

/// One edge node.
#[derive(Debug)]
pub(crate) struct Edge {
    pub(crate) addr: SocketAddr,
    service: Service,
}

/// The running services. Field order is drop order: edges, calendar services, publisher, NATS,
/// then the store.
#[derive(Debug)]
pub(crate) struct Stack {
    pub(crate) edges: Vec<Edge>,
    calendars: Vec<Service>,
    publisher: Service,
    /// One node, or three.
    nats: Vec<Service>,
    _store: TempDir,
    pub(crate) keys: Keys,
    /// The (first) node's client URL.
    pub(crate) nats_url: String,
    pub(crate) publisher_url: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct PortsFile {
    nats: Vec<String>,
    monitoring: Vec<String>,
}

impl Stack {
    /// Starts NATS, then the publisher (which creates the streams the edges wait for), then the
    /// edges, each waited for until ready.
    pub(crate) async fn start(options: &StackOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.log_dir)
            .with_context(|| format!("creating {}", options.log_dir.display()))?;
        let keys = Keys::random()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        let store = TempDir::with_prefix("herald-bench-").context("creating the store dir")?;
        let (nats, seeds, monitoring) = match options.nats {
            Nats::Single => {
                let (nats, url, monitoring) = start_single(options, &http, store.path()).await?;
                (vec![nats], vec![url], monitoring)
            }
            Nats::Cluster => {
                let mut nodes =
                    nats_cluster::spawn(&options.nats_server, store.path(), &options.log_dir)?;
                nats_cluster::wait_ready(&http, &mut nodes).await?;
                let seeds = (0..nodes.len())
                    .map(|first| nats_cluster::seeds(&nodes, first))
                    .collect();
                let monitoring = nodes[0].monitoring.clone();
                (
                    nodes.into_iter().map(|n| n.service).collect(),
                    seeds,
                    monitoring,
                )
            }
        };
        let nats_url = seeds[0]
            .split(',')
            .next()
            .context("no NATS URL")?
            .to_owned();
        let seed = |i: usize| seeds[i % seeds.len()].as_str();
        let replicas = if options.nats == Nats::Cluster {
            "3"
        } else {
            "1"
        };

        let publisher_addr = free_addr()?;
        let mut publisher_cmd = Command::new(options.bin_dir.join("herald-publisher"));
        publisher_cmd
            .env("HERALD_LISTEN", publisher_addr.to_string())
            .env("HERALD_NATS_URL", seed(0))
            .env("HERALD_STREAM_REPLICAS", replicas)
            .env("HERALD_JWT_SECRET", keys.secret())
            .env("NO_COLOR", "1");
        let mut publisher = Service::spawn("publisher", publisher_cmd, &options.log_dir)?;
        let publisher_url = format!("http://{publisher_addr}");
        wait_ready(&http, &mut publisher, &format!("{publisher_url}/readyz")).await?;
        if options.nats == Nats::Cluster {
            nats_cluster::check_replicas(&nats_url, nats_cluster::NODES).await?;
        }

        let mut edges = Vec::new();
        if options.edges {
            for (i, name) in EDGE_NAMES.into_iter().enumerate() {
                let addr = free_addr()?;
                let mut edge_cmd = Command::new(options.bin_dir.join("herald-edge"));
                edge_cmd
                    .env("HERALD_LISTEN", addr.to_string())
                    .env("HERALD_NODE_ID", name)
                    .env("HERALD_NATS_URL", seed(i + 1))
                    .env("HERALD_JWT_SECRET", keys.secret())
                    .env("HERALD_MAX_CONNECTIONS", "0")
                    .env("NO_COLOR", "1")
                    .envs(options.edge_env.iter().map(|(key, value)| (key, value)));
                let service = Service::spawn(name, edge_cmd, &options.log_dir)?;
                edges.push(Edge { addr, service });
            }
            for edge in &mut edges {
                let url = format!("http://{}/readyz", edge.addr);
                wait_ready(&http, &mut edge.service, &url).await?;
            }
        }
        let calendars = match &options.calendar {
            Some(calendar) => {
                start_calendars(options, calendar, &nats_url, &monitoring, &http).await?
            }
            None => Vec::new(),
        };
        Ok(Self {
            edges,
            calendars,
            publisher,
            nats,
            _store: store,
            keys,
            nats_url,
            publisher_url,
            http,
        })
    }
}

/// One nats-server with JetStream, its store and ports file under `dir`, waited for until
/// healthy; returns it and its client URL.
async fn start_single(
    options: &StackOptions,
    http: &reqwest::Client,
    store: &Path,
) -> anyhow::Result<(Service, String, String)> {
    let mut nats_cmd = Command::new(&options.nats_server);
    nats_cmd
        .args(["-js", "-a", "127.0.0.1", "-n", "herald-bench"])
        .args(["-p", "-1", "-m", "-1", "--ports_file_dir"])
        .arg(store)
        .arg("--store_dir")
        .arg(store.join("js"));
    let mut nats = Service::spawn("nats", nats_cmd, &options.log_dir)?;
    let ports = read_ports_file(&mut nats, store).await?;
    let nats_url = ports
        .nats
        .first()
        .context("no client URL in ports file")?
        .clone();
    let monitoring = ports
        .monitoring
        .first()
        .context("no monitoring URL in ports file")?
        .clone();
    wait_ready(
        http,
        &mut nats,
        &format!("{monitoring}/healthz?js-enabled-only=true"),
    )
    .await?;
    Ok((nats, nats_url, monitoring))
}

impl Stack {
    /// A keep-alive HTTP client for this stack's publisher, with a service
    /// token, `connections` at most at once.
    pub(crate) fn http_publisher(&self, connections: usize) -> anyhow::Result<Arc<HttpPublisher>> {
        Ok(Arc::new(HttpPublisher::new(
            &self.publisher_url,
            &self.keys.service_token()?,
            connections,
        )?))
    }

    /// A client of the publisher that posts as the service `sub`.
    pub(crate) fn http_publisher_as(
        &self,
        sub: &str,
        connections: usize,
    ) -> anyhow::Result<Arc<HttpPublisher>> {
        Ok(Arc::new(HttpPublisher::new(
            &self.publisher_url,
            &self.keys.service_token_for(sub)?,
            connections,
        )?))
    }

    /// Every server process by name, edges first.
    pub(crate) fn server_pids(&self) -> Vec<(String, u32)> {
        let mut pids: Vec<(String, u32)> = self
            .edges
            .iter()
            .map(|e| (e.service.name().to_owned(), e.service.pid()))
            .collect();
        pids.extend(
            self.calendars
                .iter()
                .map(|c| (c.name().to_owned(), c.pid())),
        );
        pids.push(("publisher".into(), self.publisher.pid()));
        for nats in &self.nats {
            pids.push((nats.name().to_owned(), nats.pid()));
        }
        pids
    }

    pub(crate) fn edge_pids(&self) -> Vec<u32> {
        self.edges.iter().map(|e| e.service.pid()).collect()
    }

    /// Every NATS node's process.
    pub(crate) fn nats_pids(&self) -> Vec<u32> {
        self.nats.iter().map(Service::pid).collect()
    }

    /// `<name> exited (<status>)` for every service that is no longer running.
    pub(crate) fn exited_services(&mut self) -> Vec<String> {
        self.edges
            .iter_mut()
            .map(|e| &mut e.service)
            .chain(self.calendars.iter_mut())
            .chain([&mut self.publisher])
            .chain(self.nats.iter_mut())
            .filter_map(|service| {
                let status = service.exited()?;
                Some(format!("{} exited ({status})", service.name()))
            })
            .collect()
    }

    /// The edges' `/metrics`, as text, one per edge.
    pub(crate) async fn edge_metrics(&self) -> Vec<String> {
        let mut texts = Vec::new();
        for edge in &self.edges {
            let text = async {
                self.http
                    .get(format!("http://{}/metrics", edge.addr))
                    .send()
                    .await?
                    .text()
                    .await
            };
            texts.push(text.await.unwrap_or_default());
        }
        texts
    }

    /// What every service logged after starting, by name.
    pub(crate) fn logs(&self) -> Vec<(String, String)> {
        self.edges
            .iter()
            .map(|e| &e.service)
            .chain(self.calendars.iter())
            .chain([&self.publisher])
            .chain(self.nats.iter())
            .map(|s| (s.name().to_owned(), s.log_after_startup()))
            .collect()
    }
}

/// Starts the calendar service's replicas (`calendar-a`, `calendar-b`, …) and waits until NATS
/// shows each one's last subscription: it serves no HTTP to poll.
async fn start_calendars(
    options: &StackOptions,
    calendar: &CalendarOptions,
    nats_url: &str,
    monitoring: &str,
    http: &reqwest::Client,
) -> anyhow::Result<Vec<Service>> {
    let bin = options.bin_dir.join("calendar-service");
    if !bin.is_file() {
        bail!(
            "{} not found (cargo build -p calendar-service)",
            bin.display()
        );
    }
    let mut replicas = Vec::new();
    for n in 0..calendar.replicas.max(1) {
        let name = format!("calendar-{}", char::from(b'a' + (n % 26) as u8));
        let mut cmd = Command::new(&bin);
        cmd.env("HERALD_NATS_URL", nats_url)
            .env("HERALD_CALENDAR_MEMBERS", &calendar.members)
            .env("NO_COLOR", "1");
        replicas.push(Service::spawn(&name, cmd, &options.log_dir)?);
    }
    let url = format!("{monitoring}/connz?subs=1&limit=1024");
    let quoted = format!("\"{CALENDAR_READY_SUBJECT}\"");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let body = async { http.get(&url).send().await?.text().await };
        let subscribed = body.await.unwrap_or_default().matches(&quoted).count();
        if subscribed >= replicas.len() {
            return Ok(replicas);
        }
        for replica in &mut replicas {
            if let Some(status) = replica.exited() {
                bail!(
                    "{} exited ({status}) before subscribing; see {}",
                    replica.name(),
                    replica.log().display()
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "only {subscribed} of {} calendar-service replicas subscribed within \
                 {READY_TIMEOUT:?}; see {}",
                replicas.len(),
                options.log_dir.display()
            );
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// The last subject the calendar service subscribes to before it answers.
const CALENDAR_READY_SUBJECT: &str = "rpc.calendar.event.list";

/// A port the OS has just called free (released before the service binds it: a small race, as
/// with any port-0 probe).
fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    listener.local_addr().context("reading the probe port")
}

/// nats-server writes its chosen ports to `<dir>/nats-server_<pid>.ports` (not atomically:
/// retried until it parses).
async fn read_ports_file(nats: &mut Service, dir: &Path) -> anyhow::Result<PortsFile> {
    let path = dir.join(format!("nats-server_{}.ports", nats.pid()));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(ports) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        {
            return Ok(ports);
        }
        if let Some(status) = nats.exited() {
            bail!(
                "nats-server exited ({status}); see {}",
                nats.log().display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "nats-server wrote no ports file; see {}",
                nats.log().display()
            );
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Polls `url` until it answers 200, failing fast if the service exits.
async fn wait_ready(
    http: &reqwest::Client,
    service: &mut Service,
    url: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let ok = http
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        if ok {
            return Ok(());
        }
        if let Some(status) = service.exited() {
            bail!(
                "{} exited ({status}) before it was ready; see {}",
                service.name(),
                service.log().display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer 200 on {url} within {READY_TIMEOUT:?}; see {}",
                service.name(),
                service.log().display()
            );
        }
        tokio::time::sleep(READY_POLL).await;
    }
}
