//! The operator artifacts: `compose.yaml` (a 3-node NATS cluster with R3 streams, two
//! publishers, two edges, the proxy) and the Kubernetes base in `deploy/kubernetes/`. These
//! files are not run by the suite (no Docker engine or cluster here), so their structure is
//! checked: what a typo or a half-done edit would break (a missing route, a replica count, a
//! probe on the wrong path, an env var no binary reads).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use serde_yaml_ng::Value;

const NATS_NODES: [&str; 3] = ["nats-1", "nats-2", "nats-3"];
const SEED_LIST: &str = "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One YAML document, merge keys (`<<: *anchor`) applied as Compose applies them.
fn yaml(text: &str, what: &str) -> Value {
    let mut value: Value =
        serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{what}: merge keys: {e}"));
    value
}

/// `value[a][b]...`, or a panic naming the missing path.
fn at<'v>(value: &'v Value, path: &[&str], what: &str) -> &'v Value {
    path.iter().fold(value, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("{what}: no `{}`", path.join(".")))
    })
}

fn str_at<'v>(value: &'v Value, path: &[&str], what: &str) -> &'v str {
    at(value, path, what)
        .as_str()
        .unwrap_or_else(|| panic!("{what}: `{}` is not a string", path.join(".")))
}

/// The env var names that a binary reads (every flag has one).
fn env_names(command: clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect()
}

fn edge_env() -> BTreeSet<String> {
    env_names(herald_edge::Args::command())
}

fn publisher_env() -> BTreeSet<String> {
    env_names(herald_publisher::Args::command())
}

fn compose() -> Value {
    yaml(&read(&repo().join("compose.yaml")), "compose.yaml")
}

fn service<'v>(compose: &'v Value, name: &str) -> &'v Value {
    at(compose, &["services", name], "compose.yaml")
}

fn command(service: &Value, what: &str) -> Vec<String> {
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

const KUBERNETES: &str = "deploy/kubernetes";

/// Every document of every manifest the kustomization lists, with its file's name.
fn manifests() -> Vec<(String, Value)> {
    let dir = repo().join(KUBERNETES);
    let kustomization = yaml(&read(&dir.join("kustomization.yaml")), "kustomization.yaml");
    assert_eq!(
        str_at(&kustomization, &["kind"], "kustomization.yaml"),
        "Kustomization"
    );
    let listed: BTreeSet<String> = at(&kustomization, &["resources"], "kustomization.yaml")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    assert_eq!(listed, on_disk, "kustomization.yaml lists every manifest");
    let mut docs = Vec::new();
    for file in listed {
        let text = read(&dir.join(&file));
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{file} is not YAML: {e}"));
            docs.push((file.clone(), value));
        }
    }
    docs
}

fn find<'d>(docs: &'d [(String, Value)], kind: &str, name: &str) -> &'d Value {
    docs.iter()
        .map(|(_, doc)| doc)
        .find(|doc| {
            doc.get("kind").and_then(Value::as_str) == Some(kind)
                && doc
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    == Some(name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in {KUBERNETES}"))
}

fn seq<'v>(value: &'v Value, path: &[&str], what: &str) -> &'v [Value] {
    at(value, path, what)
        .as_sequence()
        .unwrap_or_else(|| panic!("{what}: `{}` is not a list", path.join(".")))
}

fn int_at(value: &Value, path: &[&str], what: &str) -> i64 {
    at(value, path, what)
        .as_i64()
        .unwrap_or_else(|| panic!("{what}: `{}` is not an integer", path.join(".")))
}

#[test]
fn kubernetes_base_drains_edges_within_the_grace_period_and_wires_every_reference() {
    let docs = manifests();
    for (name, binary_env, port) in [
        ("herald-edge", edge_env(), 8080),
        ("herald-publisher", publisher_env(), 8090),
    ] {
        let deployment = find(&docs, "Deployment", name);
        let pod = at(deployment, &["spec", "template", "spec"], name);
        let labels = at(
            deployment,
            &["spec", "template", "metadata", "labels"],
            name,
        );
        assert_eq!(
            at(deployment, &["spec", "selector", "matchLabels"], name),
            labels,
            "{name}: selector"
        );
        let replicas = int_at(deployment, &["spec", "replicas"], name);
        assert!(
            replicas >= 2,
            "{name}: one pod is a single point of failure"
        );
        assert_eq!(
            int_at(
                deployment,
                &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
                name
            ),
            0,
            "{name}: a rollout keeps every pod until its successor is ready"
        );
        let [container] = seq(pod, &["containers"], name) else {
            panic!("{name}: one container")
        };
        let ports = seq(container, &["ports"], name);
        let [http] = ports else {
            panic!("{name}: one port")
        };
        assert_eq!(str_at(http, &["name"], name), "http");
        assert_eq!(int_at(http, &["containerPort"], name), port);
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            assert_eq!(str_at(container, &[probe, "httpGet", "path"], name), path);
            assert_eq!(str_at(container, &[probe, "httpGet", "port"], name), "http");
        }
        for resource in ["cpu", "memory"] {
            at(container, &["resources", "requests", resource], name);
        }
        at(container, &["resources", "limits", "memory"], name);

        // The flags: ConfigMap keys are env vars this binary reads (else silently ignored).
        let config_maps: Vec<&str> = seq(container, &["envFrom"], name)
            .iter()
            .map(|e| str_at(e, &["configMapRef", "name"], name))
            .collect();
        let mut config = serde_yaml_ng::Mapping::new();
        for cm in config_maps {
            let data = at(find(&docs, "ConfigMap", cm), &["data"], cm)
                .as_mapping()
                .unwrap();
            for (key, value) in data {
                let key_str = key.as_str().unwrap();
                assert!(
                    binary_env.contains(key_str),
                    "ConfigMap {cm}: no flag reads {key_str}"
                );
                config.insert(key.clone(), value.clone());
            }
        }
        let config = Value::Mapping(config);
        let nats_url = str_at(&config, &["HERALD_NATS_URL"], name);
        assert_eq!(
            nats_url.split(',').count(),
            3,
            "{name}: a seed list of the 3 nodes"
        );
        assert_eq!(
            str_at(&config, &["HERALD_LISTEN"], name),
            format!("0.0.0.0:{port}")
        );

        // The secrets: every file a flag names is in a mounted Secret.
        let mounts: Vec<(&str, &str)> = seq(container, &["volumeMounts"], name)
            .iter()
            .map(|m| (str_at(m, &["name"], name), str_at(m, &["mountPath"], name)))
            .collect();
        let secret_volumes: BTreeSet<&str> = seq(pod, &["volumes"], name)
            .iter()
            .filter(|v| v.get("secret").is_some())
            .map(|v| str_at(v, &["name"], name))
            .collect();
        let env = seq(container, &["env"], name);
        let creds = env
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some("HERALD_NATS_CREDS"))
            .map(|e| str_at(e, &["value"], name))
            .unwrap_or_else(|| panic!("{name}: HERALD_NATS_CREDS"));
        let key = str_at(&config, &["HERALD_JWT_PUBLIC_KEY"], name);
        for file in [creds, key] {
            let (volume, _) = mounts
                .iter()
                .find(|(_, path)| file.starts_with(&format!("{path}/")))
                .unwrap_or_else(|| panic!("{name}: {file} is in no mounted volume"));
            assert!(
                secret_volumes.contains(volume),
                "{name}: {file} comes from a Secret"
            );
        }

        // Drain before SIGKILL: the grace period covers the preStop pause and, for the edge,
        // the drain timeout (HERALD_DRAIN_TIMEOUT_MS, whose default is 10 s).
        let pre_stop = seq(
            container,
            &["lifecycle", "preStop", "exec", "command"],
            name,
        );
        let pause: i64 = match pre_stop {
            [sleep, secs] if sleep.as_str() == Some("sleep") => {
                secs.as_str().unwrap().parse().unwrap()
            }
            other => panic!("{name}: preStop is a pause, not {other:?}"),
        };
        let drain_ms: i64 = if name == "herald-edge" {
            config
                .get("HERALD_DRAIN_TIMEOUT_MS")
                .map_or(10_000, |v| v.as_str().unwrap().parse().unwrap())
        } else {
            0
        };
        let grace = int_at(pod, &["terminationGracePeriodSeconds"], name);
        assert!(
            grace * 1000 >= pause * 1000 + drain_ms + 5_000,
            "{name}: {grace} s of grace for a {pause} s pause and a {drain_ms} ms drain"
        );

        // The Service and the disruption budget reach these pods, and the budget lets one go.
        let service = find(&docs, "Service", name);
        assert_eq!(
            at(service, &["spec", "selector"], name),
            labels,
            "{name}: Service selector"
        );
        for p in seq(service, &["spec", "ports"], name) {
            assert_eq!(str_at(p, &["targetPort"], name), "http");
        }
        let budget = find(&docs, "PodDisruptionBudget", name);
        assert_eq!(
            at(budget, &["spec", "selector", "matchLabels"], name),
            labels
        );
        let max_unavailable = int_at(budget, &["spec", "maxUnavailable"], name);
        assert!((1..replicas).contains(&max_unavailable), "{name}: PDB");
    }
    let publisher_config = find(&docs, "ConfigMap", "herald-publisher");
    assert_eq!(
        str_at(
            publisher_config,
            &["data", "HERALD_STREAM_REPLICAS"],
            "herald-publisher"
        ),
        "3"
    );
}

/// kubernetes-validate (PyPI) bundles the Kubernetes JSON schemas of every release from 1.25
/// on, so it validates offline; pinned, with its dependencies, in a venv under `.herald/`.
const VALIDATOR: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "attrs==26.1.0",
    "importlib_resources==7.1.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "packaging==26.4",
    "PyYAML==6.0.4",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "typing_extensions==4.16.0",
];
/// pip, run from its wheel, so a python3 without pip or ensurepip (Debian's) can install too.
const PIP: &str = "24.3.1";

/// Makes the venv at argv[1] with the requirements that follow, using pip from its wheel:
/// `python3 -m pip download` fetches that wheel when pip is there (so its index and proxy
/// settings apply), else PyPI's JSON API does.
const INSTALL: &str = r#"
import glob, json, os, shutil, subprocess, sys, tempfile, urllib.parse, urllib.request, venv
dest, pip_version, *requirements = sys.argv[1:]
venv.EnvBuilder(with_pip=False, clear=True).create(dest)
scratch = tempfile.mkdtemp(dir=os.path.dirname(dest))
pip = f"pip=={pip_version}"
got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                      "-q", "-d", scratch, pip])
if got.returncode != 0:
    print(f"pip download failed; fetching {pip} from PyPI directly", file=sys.stderr)
    index = "https://pypi.org/pypi/pip/json"
    with urllib.request.urlopen(index, timeout=60) as r:
        files = json.load(r)["releases"][pip_version]
    wheel = next(f for f in files if f["filename"].endswith(".whl"))
    # A mirror may answer with a URL relative to the index.
    with urllib.request.urlopen(urllib.parse.urljoin(index, wheel["url"]), timeout=300) as r:
        with open(os.path.join(scratch, wheel["filename"]), "wb") as out:
            out.write(r.read())
[wheel] = glob.glob(os.path.join(scratch, "pip-*.whl"))
python = os.path.join(dest, "bin", "python")
subprocess.run([python, os.path.join(wheel, "pip"), "install", "-q", "--no-deps",
                "--disable-pip-version-check", "--only-binary=:all:", *requirements], check=True)
shutil.rmtree(scratch)
"#;

/// The venv's python with kubernetes-validate, installed on first use. A marker file written
/// last names what was installed, so an interrupted or older install is redone.
fn kubernetes_validate() -> PathBuf {
    let version = VALIDATOR[0].split_once("==").unwrap().1;
    let venv = repo()
        .join(".herald")
        .join(format!("kubernetes-validate-{version}"));
    let python = venv.join("bin/python");
    let marker = venv.join("installed");
    let wanted = VALIDATOR.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|got| got == wanted) {
        return python;
    }
    eprintln!(
        "deploy: installing {} into {} (once)",
        VALIDATOR.join(" "),
        venv.display()
    );
    std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
    let status = Command::new("python3")
        .args(["-c", INSTALL])
        .arg(&venv)
        .arg(PIP)
        .args(VALIDATOR)
        .status()
        .expect("python3 runs (the tests need it, as xtask does)");
    assert!(status.success(), "installing kubernetes-validate failed");
    std::fs::write(&marker, wanted).unwrap();
    python
}

#[test]
fn kubernetes_manifests_match_the_kubernetes_schemas() {
    let validator = kubernetes_validate();
    let dir = repo().join(KUBERNETES);
    let files: Vec<String> = manifests()
        .into_iter()
        .map(|(file, _)| file)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let resources = manifests().len();
    // The oldest Kubernetes release still commonly run, and the newest the validator knows.
    for version in ["1.30.0", "1.37.0"] {
        let out = Command::new(&validator)
            .current_dir(&dir)
            .args([
                "-m",
                "kubernetes_validate",
                "--strict",
                "--kubernetes-version",
                version,
            ])
            .args(&files)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "Kubernetes {version}:\n{stdout}{stderr}"
        );
        // Each resource was checked against a schema (an unknown kind only warns).
        let passed = stdout
            .lines()
            .chain(stderr.lines())
            .filter(|l| l.contains(" passed "))
            .count();
        assert_eq!(passed, resources, "Kubernetes {version}:\n{stdout}{stderr}");
    }
}
