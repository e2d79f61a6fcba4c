//! compose.yaml's NATS nodes, run for real: no Docker engine here, so their command lines
//! (host names and ports moved to loopback, the volume to a temp dir) go to the nats-server
//! the suite uses, and the three must form one JetStream cluster.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::compose::{NATS_NODES, command, compose, service};

/// The nodes' processes, killed on drop.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

#[tokio::test]
async fn compose_nats_nodes_form_one_jetstream_cluster() {
    let compose = compose();
    let dir = tempfile::TempDir::new().unwrap();
    // Client, monitoring and route port per node, held until all are chosen.
    let listeners: Vec<[TcpListener; 3]> = NATS_NODES
        .iter()
        .map(|_| [free_port(), free_port(), free_port()])
        .collect();
    let ports: Vec<[u16; 3]> = listeners
        .iter()
        .map(|l| l.each_ref().map(|l| l.local_addr().unwrap().port()))
        .collect();
    drop(listeners);
    let on_loopback = |arg: &str| {
        NATS_NODES
            .iter()
            .zip(&ports)
            .fold(arg.to_owned(), |arg, (node, [_, _, route])| {
                arg.replace(&format!("{node}:6222"), &format!("127.0.0.1:{route}"))
            })
    };
    let mut nodes = Nodes(Vec::new());
    for (node, [client, http, route]) in NATS_NODES.iter().zip(&ports) {
        let mut args: Vec<String> = command(service(&compose, node), node)
            .iter()
            .map(|arg| on_loopback(arg))
            .collect();
        for (flag, value) in [
            ("-sd", dir.path().join(node).to_string_lossy().into_owned()),
            ("-m", http.to_string()),
            ("--cluster", format!("nats://127.0.0.1:{route}")),
        ] {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1] = value;
        }
        args.extend(["-a", "127.0.0.1", "-p"].map(String::from));
        args.push(client.to_string());
        let child = Command::new(herald_tests::nats::binary())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        nodes.0.push(child);
    }

    // Healthy (current with a meta leader) and routed to both others, on every node.
    let http = herald_tests::http_client(Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    for (node, [_, monitoring, _]) in NATS_NODES.iter().zip(&ports) {
        let base = format!("http://127.0.0.1:{monitoring}");
        loop {
            let healthy = matches!(
                http.get(format!("{base}/healthz")).send().await,
                Ok(r) if r.status() == 200
            );
            let peers: BTreeSet<String> = match http.get(format!("{base}/routez")).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            }
            .and_then(|z| z.get("routes").and_then(|r| r.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.get("remote_name")?.as_str().map(String::from))
            .collect();
            if healthy && peers.len() == NATS_NODES.len() - 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{node}: healthy {healthy}, routed to {peers:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
