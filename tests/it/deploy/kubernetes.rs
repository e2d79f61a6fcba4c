//! deploy/kubernetes: the kustomize base for an existing NATS cluster.

use std::collections::BTreeSet;
use std::process::Command;

use serde_yaml_ng::Value;

use super::validator::kubernetes_validate;
use super::{at, edge_env, int_at, publisher_env, read, repo, seq, str_at, yaml};

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
