//! The operator artifacts: `compose.yaml` (a 3-node NATS cluster with R3 streams, two
//! publishers, two edges, the proxy) and the Kubernetes base in `deploy/kubernetes/`. These
//! files are not run by the suite (no Docker engine or cluster here), so their structure is
//! checked: what a typo or a half-done edit would break (a missing route, a replica count, a
//! probe on the wrong path, an env var no binary reads).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_yaml_ng::Value;

mod alerts;
mod compose;
mod compose_nats;
mod kubernetes;
mod validator;

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
