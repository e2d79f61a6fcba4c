//! compose.yaml: a 3-node NATS cluster, two publishers, two edges and the proxy.

use std::collections::BTreeSet;
use std::process::Command;

use serde_yaml_ng::Value;

use super::{at, edge_env, publisher_env, read, repo, str_at, yaml};

pub(super) const NATS_NODES: [&str; 3] = ["nats-1", "nats-2", "nats-3"];
const SEED_LIST: &str = "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222";

pub(super) fn compose() -> Value {
    yaml(&read(&repo().join("compose.yaml")), "compose.yaml")
}

pub(super) fn service<'v>(compose: &'v Value, name: &str) -> &'v Value {
    at(compose, &["services", name], "compose.yaml")
}

pub(super) fn command(service: &Value, what: &str) -> Vec<String> {
    at(service, &["command"], what)
        .as_sequence()
        .unwrap_or_else(|| panic!("{what}: command is not a list"))
        .iter()
        .map(|arg| arg.as_str().expect("string arguments").to_owned())
        .collect()
}

/// The argument after `flag`.
fn arg<'c>(command: &'c [String], flag: &str, what: &str) -> &'c str {
    let i = command
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{what}: no {flag} in {command:?}"));
    command
        .get(i + 1)
        .unwrap_or_else(|| panic!("{what}: {flag} has no value"))
}

fn depends_on_healthy(service: &Value, what: &str) -> BTreeSet<String> {
    let deps = at(service, &["depends_on"], what)
        .as_mapping()
        .unwrap_or_else(|| panic!("{what}: depends_on is not a mapping"));
    deps.iter()
        .map(|(name, dep)| {
            let name = name.as_str().unwrap().to_owned();
            assert_eq!(
                str_at(dep, &["condition"], what),
                "service_healthy",
                "{what} must wait for {name} to be healthy"
            );
            name
        })
        .collect()
}

#[test]
fn compose_runs_a_three_node_nats_cluster_with_two_of_each_service() {
    let compose = compose();
    let services: BTreeSet<&str> = at(&compose, &["services"], "compose.yaml")
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    let expected = BTreeSet::from([
        "nats-1",
        "nats-2",
        "nats-3",
        "publisher-a",
        "publisher-b",
        "edge-a",
        "edge-b",
        "proxy",
    ]);
    assert_eq!(services, expected);
    for name in &services {
        let test = at(service(&compose, name), &["healthcheck", "test"], name);
        assert!(
            test.as_sequence().is_some_and(|t| !t.is_empty()),
            "{name}: healthcheck"
        );
    }

    let mut volumes = BTreeSet::new();
    for node in NATS_NODES {
        let nats = service(&compose, node);
        let command = command(nats, node);
        assert_eq!(arg(&command, "--name", node), node, "{node}: server name");
        assert!(command.iter().any(|a| a == "-js"), "{node}: JetStream on");
        assert_eq!(arg(&command, "--cluster_name", node), "herald");
        assert_eq!(arg(&command, "--cluster", node), "nats://0.0.0.0:6222");
        // Every node routes to every node, so the cluster forms whichever starts first.
        let routes: BTreeSet<&str> = arg(&command, "--routes", node).split(',').collect();
        let all: BTreeSet<String> = NATS_NODES
            .iter()
            .map(|n| format!("nats://{n}:6222"))
            .collect();
        assert_eq!(
            routes,
            all.iter().map(String::as_str).collect(),
            "{node}: routes"
        );
        // Each node its own store: three copies, not one volume shared.
        let store = arg(&command, "-sd", node);
        let mounts = at(nats, &["volumes"], node).as_sequence().unwrap();
        let [mount] = mounts.as_slice() else {
            panic!("{node}: one volume")
        };
        let (volume, path) = mount.as_str().unwrap().split_once(':').unwrap();
        assert_eq!(path, store, "{node}: the store is the volume");
        assert!(volumes.insert(volume.to_owned()), "{node} shares {volume}");
        assert!(
            at(&compose, &["volumes"], "compose.yaml")
                .get(volume)
                .is_some(),
            "{volume} is declared"
        );
        let probe = at(nats, &["healthcheck", "test"], node)
            .as_sequence()
            .unwrap();
        assert!(
            probe
                .iter()
                .any(|a| a.as_str().is_some_and(|a| a.contains(":8222/healthz"))),
            "{node}: healthy once current with the meta leader"
        );
    }

    let publisher_env = publisher_env();
    let edge_env = edge_env();
    let nats_nodes: BTreeSet<String> = NATS_NODES.iter().map(|n| (*n).to_owned()).collect();
    for name in ["publisher-a", "publisher-b"] {
        let publisher = service(&compose, name);
        assert_eq!(command(publisher, name), ["herald-publisher"]);
        assert_eq!(
            str_at(publisher, &["environment", "HERALD_NATS_URL"], name),
            SEED_LIST
        );
        assert_eq!(
            str_at(publisher, &["environment", "HERALD_STREAM_REPLICAS"], name),
            "3"
        );
        check_env(publisher, &publisher_env, name);
        check_ready(publisher, 8090, name);
    }
    assert_eq!(
        depends_on_healthy(service(&compose, "publisher-a"), "publisher-a"),
        nats_nodes
    );
    // Two publishers never race to create the streams.
    assert_eq!(
        depends_on_healthy(service(&compose, "publisher-b"), "publisher-b"),
        BTreeSet::from(["publisher-a".to_owned()])
    );
    let mut node_ids = BTreeSet::new();
    for name in ["edge-a", "edge-b"] {
        let edge = service(&compose, name);
        assert_eq!(command(edge, name), ["herald-edge"]);
        assert_eq!(
            str_at(edge, &["environment", "HERALD_NATS_URL"], name),
            SEED_LIST
        );
        assert!(node_ids.insert(str_at(edge, &["environment", "HERALD_NODE_ID"], name)));
        check_env(edge, &edge_env, name);
        check_ready(edge, 8080, name);
        // Compose's SIGKILL must not cut the drain (10 s by default) short.
        let grace = str_at(edge, &["stop_grace_period"], name);
        let grace: u64 = grace
            .strip_suffix('s')
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(
            grace >= 15,
            "{name}: stop_grace_period {grace}s for a 10 s drain"
        );
        assert!(
            depends_on_healthy(edge, name).contains("publisher-a"),
            "{name}: after the streams"
        );
    }

    // The proxy waits for (nginx resolves its upstreams once) and balances over both of each.
    let proxy = service(&compose, "proxy");
    let upstreams = depends_on_healthy(proxy, "proxy");
    for name in [
        "edge-a:8080",
        "edge-b:8080",
        "publisher-a:8090",
        "publisher-b:8090",
    ] {
        assert!(
            upstreams.contains(name.split(':').next().unwrap()),
            "proxy waits for {name}"
        );
    }
    let nginx = read(&repo().join("deploy/nginx.conf"));
    for (upstream, members) in [
        ("edges", ["edge-a:8080", "edge-b:8080"]),
        ("publishers", ["publisher-a:8090", "publisher-b:8090"]),
    ] {
        let block = nginx
            .split(&format!("upstream {upstream} {{"))
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .unwrap_or_else(|| panic!("nginx.conf: no upstream {upstream}"));
        let servers: BTreeSet<&str> = block
            .lines()
            .filter_map(|l| l.trim().strip_prefix("server "))
            .map(|s| s.trim_end_matches(';'))
            .collect();
        assert_eq!(
            servers,
            BTreeSet::from(members),
            "nginx.conf: upstream {upstream}"
        );
        // Round-robin: no stickiness (any edge serves any user).
        assert!(
            !block.contains("ip_hash") && !block.contains("hash "),
            "{upstream} is sticky"
        );
    }
}

/// Every HERALD_ variable set on a service is one its binary reads (a typo is silently ignored).
fn check_env(service: &Value, known: &BTreeSet<String>, what: &str) {
    for key in at(service, &["environment"], what)
        .as_mapping()
        .unwrap()
        .keys()
    {
        let key = key.as_str().unwrap();
        assert!(known.contains(key), "{what}: no flag reads {key}");
    }
}

fn check_ready(service: &Value, port: u16, what: &str) {
    let listen = str_at(service, &["environment", "HERALD_LISTEN"], what);
    assert_eq!(listen, format!("0.0.0.0:{port}"), "{what}: listen");
    let probe: Vec<&str> = at(service, &["healthcheck", "test"], what)
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let probe = probe.join(" ");
    assert!(
        probe.contains(&format!("/dev/tcp/127.0.0.1/{port}")) && probe.contains("GET /readyz"),
        "{what}: healthy means ready: {probe}"
    );
}

/// Where Docker Compose is installed, it validates the file too (interpolation, schema).
#[test]
fn docker_compose_config_accepts_compose_yaml() {
    let has_compose = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_compose {
        eprintln!("deploy: no `docker compose` here; compose.yaml checked by structure only");
        return;
    }
    let out = Command::new("docker")
        .current_dir(repo())
        .args(["compose", "-f", "compose.yaml", "config", "--quiet"])
        .env("HERALD_JWT_SECRET", "compose-config-test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
