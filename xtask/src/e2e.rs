//! `cargo xtask e2e`: the browser tests in `tests/e2e/`, in headless Chromium, against NATS, the
//! publisher and two edges started here in dev mode on free ports (so `cargo xtask up` can keep
//! running beside it).
//!
//! The tests get the addresses in `HERALD_E2E_*` variables; the failover test SIGKILLs edge-a
//! itself, by the pid in `HERALD_E2E_EDGE_A_PID`. Not part of `cargo xtask test`.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{self, Command, ExitCode, Stdio};

use crate::up::{self, Children};
use crate::{nats_server, util};

/// What `executablePath` the tests launch; `HERALD_E2E_CHROMIUM` overrides it.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// playwright-core needs Node 20; `--test-concurrency` needs 20.10.
const MIN_NODE: (u32, u32) = (20, 10);
const INSTALL_HINT: &str = "the browser tests need Node.js 20.10+, npm and Chromium: \
     `apt-get install chromium nodejs npm` on Debian/Ubuntu (Debian 13's nodejs is recent \
     enough; Debian 12's is 18: use NodeSource or nvm there); HERALD_E2E_CHROMIUM may point \
     at another Chromium";

pub(crate) fn run(node_args: &[String]) -> Result<ExitCode, String> {
    // First, so a machine without a browser fails in a second, not after a build.
    let chromium = check_tools()?;
    let nats = nats_server::ensure()?;
    up::build()?;
    let e2e_dir = util::repo_root().join("tests").join("e2e");
    npm_ci_if_needed(&e2e_dir)?;

    // One scratch directory per run: a fresh JetStream store, so no test sees an older run's
    // events, and logs that a concurrent `cargo xtask up` does not overwrite.
    let scratch = util::herald_dir().join("e2e");
    let store = scratch.join(format!("nats-store-{}", process::id()));
    let logs = scratch.join("logs");
    util::create_dir_all(&logs)?;
    let result = run_stack(&nats.path, &chromium, &store, logs, &e2e_dir, node_args);
    // Best effort: a leftover store is git-ignored and only costs disk.
    let _ = fs::remove_dir_all(&store);
    result
}

fn run_stack(
    nats: &Path,
    chromium: &str,
    store: &Path,
    logs: PathBuf,
    e2e_dir: &Path,
    node_args: &[String],
) -> Result<ExitCode, String> {
    let [
        nats_port,
        monitor_port,
        publisher_port,
        edge_a_port,
        edge_b_port,
    ] = free_ports()?;
    let secret = up::random_secret()?;
    let bin = util::target_dir().join("debug");
    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    let publisher_url = format!("http://127.0.0.1:{publisher_port}");
    // Dropped on every way out of here: stops the services, newest first.
    let mut children = Children::new(logs.clone());

    let mut nats_cmd = Command::new(nats);
    nats_cmd
        .args(["-js", "-a", "127.0.0.1", "-n", "herald-e2e"])
        .args(["-p", &nats_port.to_string()])
        .args(["-m", &monitor_port.to_string()])
        .arg("--store_dir")
        .arg(store);
    children.spawn("nats", nats_cmd)?;
    children.wait_ready("nats", monitor_port, "/healthz?js-enabled-only=true")?;

    let mut publisher = Command::new(bin.join("herald-publisher"));
    publisher
        .env("HERALD_LISTEN", format!("127.0.0.1:{publisher_port}"))
        .env("HERALD_NATS_URL", &nats_url)
        .env("HERALD_JWT_SECRET", &secret)
        .env("HERALD_DEV", "1");
    children.spawn("publisher", publisher)?;
    children.wait_ready("publisher", publisher_port, "/readyz")?;

    let edges = [("edge-a", edge_a_port), ("edge-b", edge_b_port)];
    for (name, port) in edges {
        let mut edge = Command::new(bin.join("herald-edge"));
        edge.env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_NODE_ID", name)
            .env("HERALD_NATS_URL", &nats_url)
            .env("HERALD_JWT_SECRET", &secret)
            .env("HERALD_DEV", "1")
            .env("HERALD_DEV_PUBLISHER_URL", &publisher_url);
        children.spawn(name, edge)?;
    }
    for (name, port) in edges {
        children.wait_ready(name, port, "/readyz")?;
    }
    let edge_a_pid = children.pid("edge-a").expect("edge-a was just started");

    eprintln!(
        "xtask: running the browser tests (edges :{edge_a_port} and :{edge_b_port}, publisher \
         :{publisher_port}; logs in {})",
        logs.display()
    );
    let mut node = Command::new("node");
    node.arg("--test")
        // One file at a time: the failover test kills edge-a, and two Chromiums at once on a
        // small CI box only add timing noise.
        .arg("--test-concurrency=1")
        .args(node_args)
        .arg(e2e_dir)
        .current_dir(util::repo_root())
        .env(
            "HERALD_E2E_EDGE_A",
            format!("http://127.0.0.1:{edge_a_port}"),
        )
        .env(
            "HERALD_E2E_EDGE_B",
            format!("http://127.0.0.1:{edge_b_port}"),
        )
        .env("HERALD_E2E_EDGE_A_PID", edge_a_pid.to_string())
        .env("HERALD_E2E_PUBLISHER", &publisher_url)
        .env("HERALD_E2E_SECRET", &secret)
        .env("HERALD_E2E_CHROMIUM", chromium)
        .env("HERALD_E2E_SCREENSHOT", "1");
    let status = util::run(&mut node)?;
    drop(children);
    if !status.success() {
        eprintln!(
            "xtask: browser tests failed ({status}); service logs are in {}",
            logs.display()
        );
    }
    Ok(util::exit_code(status))
}

/// node (20.10+), npm and Chromium, or an error that says how to install them. Returns the
/// Chromium to launch.
fn check_tools() -> Result<String, String> {
    let node = Command::new("node")
        .arg("--version")
        .stderr(Stdio::inherit())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let Some(node) = node else {
        return Err(format!("node not found; {INSTALL_HINT}"));
    };
    match parse_major_minor(&node) {
        Some(version) if version >= MIN_NODE => {}
        _ => {
            return Err(format!("node {node} is too old; {INSTALL_HINT}"));
        }
    }
    let npm_works = Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !npm_works {
        return Err(format!("npm not found; {INSTALL_HINT}"));
    }

    let chromium =
        std::env::var("HERALD_E2E_CHROMIUM").unwrap_or_else(|_| DEFAULT_CHROMIUM.to_owned());
    let runs = Command::new(&chromium)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !runs {
        return Err(format!(
            "{chromium} is missing or does not run (`{chromium} --version` failed); {INSTALL_HINT}"
        ));
    }
    Ok(chromium)
}

/// `v20.20.2` -> `(20, 20)`.
fn parse_major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// `npm ci` from the committed lockfile, unless `node_modules` is already there. playwright-core
/// downloads no browser; the tests use the system's Chromium.
fn npm_ci_if_needed(dir: &Path) -> Result<(), String> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the browser tests' npm packages (npm ci in {})",
        dir.display()
    );
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    let status = util::run(&mut npm)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("npm ci in {} failed ({status})", dir.display()))
    }
}

/// Five distinct ports the OS has just called free. Held all at once while asking so they
/// differ; released before the services bind them (a small race, as with any port-0 probe).
fn free_ports() -> Result<[u16; 5], String> {
    let listeners = (0..5)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    let mut ports = [0; 5];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(|e| format!("cannot read a probe port: {e}"))?
            .port();
    }
    Ok(ports)
}
