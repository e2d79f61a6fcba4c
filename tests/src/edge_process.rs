//! An edge run as a child process (`herald-edge-process`), so a test can
//! SIGKILL it: nothing of it lives on, not its NATS connection, not its
//! sockets, not its tasks.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
};

use crate::clients::TEST_SECRET;

/// A running edge process; SIGKILLed on drop.
#[derive(Debug)]
pub struct EdgeProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl EdgeProcess {
    /// Starts `binary` (the test binary's `CARGO_BIN_EXE_herald-edge-process`)
    /// against `nats_url` as `node_id`, with extra `HERALD_*` variables, and
    /// waits until it serves.
    pub async fn spawn(binary: &Path, nats_url: &str, node_id: &str, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HERALD_LISTEN", "127.0.0.1:0")
            .env("HERALD_NATS_URL", nats_url)
            .env("HERALD_NODE_ID", node_id)
            .env("HERALD_JWT_SECRET", TEST_SECRET)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the edge process");
        let stdout = child.stdout.take().expect("piped stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(crate::WAIT, line)
            .await
            .expect("the edge process starts in time")
            .unwrap()
            .expect("its first line");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("an address");
        crate::apps::wait_ready(addr).await;
        Self { child, addr }
    }

    /// `ws://addr/v1/ws?<query>`
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/v1/ws?{query}", self.addr)
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
