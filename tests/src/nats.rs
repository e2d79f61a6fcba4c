//! A real nats-server with JetStream, on OS-chosen ports, with a temporary
//! store; killed and cleaned up on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde::Deserialize;
use tempfile::TempDir;

/// Set by `cargo xtask test` to the pinned binary.
pub const NATS_SERVER_ENV: &str = "HERALD_NATS_SERVER";

#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    /// The store, kept across restarts and removed on drop.
    store: TempDir,
    ports: TempDir,
    /// `nats://127.0.0.1:<port>`
    pub url: String,
    /// `http://127.0.0.1:<port>`, the monitoring endpoint.
    pub monitoring: String,
    /// A config file given with `-c`, kept across restarts.
    config: Option<PathBuf>,
}

#[derive(Deserialize)]
struct PortsFile {
    nats: Vec<String>,
    monitoring: Vec<String>,
}

impl NatsServer {
    /// Starts a server and waits until it reports its ports.
    ///
    /// # Panics
    /// No nats-server binary, or it does not start within the bound.
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts a server with `config` (nats-server's config syntax, e.g.
    /// `max_pending: 2MB`) on top of the usual flags.
    ///
    /// # Panics
    /// As [`NatsServer::start`].
    pub fn start_with_config(config: &str) -> Self {
        // Every test starts here, before its first reqwest client (see
        // `install_crypto_provider`).
        herald_shared::jwks::install_crypto_provider();
        let store = TempDir::new().expect("temp store");
        let ports = TempDir::new().expect("temp ports dir");
        let config = (!config.is_empty()).then(|| {
            let path = ports.path().join("nats-server.conf");
            std::fs::write(&path, config).expect("writing the nats-server config");
            path
        });
        let (child, parsed) = spawn(&store, &ports, "-1", config.as_deref());
        Self {
            child,
            store,
            ports,
            url: parsed.nats[0].clone(),
            monitoring: parsed.monitoring[0].clone(),
            config,
        }
    }

    /// `slow_consumers` from `/varz`: connections the server cut off (or
    /// found) over its `max_pending`, since it started.
    pub async fn slow_consumers(&self) -> u64 {
        #[derive(Deserialize)]
        struct Varz {
            slow_consumers: u64,
        }
        let varz: Varz = reqwest::get(format!("{}/varz", self.monitoring))
            .await
            .expect("varz")
            .json()
            .await
            .expect("varz json");
        varz.slow_consumers
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and
    /// store, as an operator's restart or a crash would.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Kills the server (SIGKILL), keeping its store and port for
    /// [`NatsServer::start_again`]: NATS down for as long as a test needs.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts a stopped server again on the same port and store.
    pub fn start_again(&mut self) {
        let port = self
            .url
            .rsplit(':')
            .next()
            .expect("a port in the url")
            .to_string();
        let (child, parsed) = spawn(&self.store, &self.ports, &port, self.config.as_deref());
        self.child = child;
        self.monitoring = parsed.monitoring[0].clone();
        assert_eq!(parsed.nats[0], self.url, "restarted on another port");
    }

    /// Kills the server (SIGKILL); it stays down until [`restart`](Self::restart).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The channel subscriptions of every client named `herald-edge …`:
    /// all but inboxes and each edge's one session control subscription.
    pub async fn edge_subscriptions(&self) -> Vec<String> {
        self.all_edge_subscriptions()
            .await
            .into_iter()
            .filter(|s| s != herald_shared::subject::SESSION_CONTROL_SUBJECTS)
            .collect()
    }

    /// The server's `/connz` (with each connection's subscriptions when `subs`).
    ///
    /// # Panics
    /// The monitoring endpoint does not answer with JSON.
    pub async fn connz(&self, subs: bool) -> serde_json::Value {
        reqwest::get(format!("{}/connz?subs={}", self.monitoring, u8::from(subs)))
            .await
            .expect("connz")
            .json()
            .await
            .expect("connz json")
    }

    /// Every subscription subject but inboxes of every client named `herald-edge …`.
    pub async fn all_edge_subscriptions(&self) -> Vec<String> {
        #[derive(Deserialize)]
        struct Connz {
            connections: Vec<Conn>,
        }
        #[derive(Deserialize)]
        struct Conn {
            #[serde(default)]
            name: String,
            #[serde(default)]
            subscriptions_list: Vec<String>,
        }
        let connz: Connz = reqwest::get(format!("{}/connz?subs=1", self.monitoring))
            .await
            .expect("connz")
            .json()
            .await
            .expect("connz json");
        connz
            .connections
            .into_iter()
            .filter(|c| c.name.starts_with("herald-edge"))
            .flat_map(|c| c.subscriptions_list)
            .filter(|s| !s.starts_with("_INBOX"))
            .collect()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// The child is handed to `NatsServer`, whose `Drop` kills and waits for it.
#[allow(clippy::zombie_processes)]
/// Spawns nats-server on `port` (`-1`: one the OS picks) and reads its ports file.
fn spawn(
    store: &TempDir,
    ports: &TempDir,
    port: &str,
    config: Option<&std::path::Path>,
) -> (Child, PortsFile) {
    let mut command = Command::new(binary());
    if let Some(config) = config {
        command.arg("-c").arg(config);
    }
    let mut child = command
        .args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            port,
            "-m",
            "-1",
            "--ports_file_dir",
        ])
        .arg(ports.path())
        .arg("-sd")
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("starting {}: {err}", binary().display()));
    let ports_file = ports
        .path()
        .join(format!("nats-server_{}.ports", child.id()));
    let deadline = Instant::now() + crate::WAIT;
    loop {
        // The file is written without an atomic rename: retry until it parses.
        if let Some(parsed) = std::fs::read(&ports_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            return (child, parsed);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nats-server did not report its ports in time");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The nats-server to run: `$HERALD_NATS_SERVER`, the one `cargo xtask`
/// installs under `.herald/bin`, or `nats-server` from `PATH`.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os(NATS_SERVER_ENV) {
        return PathBuf::from(path);
    }
    let pinned = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.herald/bin/nats-server");
    if pinned.exists() {
        return pinned;
    }
    PathBuf::from("nats-server")
}
