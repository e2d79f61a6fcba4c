//! The browser tests in `tests/e2e/`, in headless Chromium, against NATS, the publisher and two
//! edges started here in dev mode on free ports (so `cargo xtask up` can keep running beside
//! it). `cargo xtask test` runs them after the Rust tests; `cargo xtask e2e` runs only them.
//!
//! The tests get the addresses in `HERALD_E2E_*` variables; the failover test SIGKILLs edge-a
//! itself, by the pid in `HERALD_E2E_EDGE_A_PID`. What they need is installed when missing:
//! Debian's `chromium` package through apt-get, Node.js from PyPI (see `node`), playwright-core
//! from the committed lockfile. Nothing is skipped: a machine that cannot get them fails.

use std::path::{Path, PathBuf};
use std::process::{self, Command, ExitCode, Stdio};
use std::{env, fs, io};

use crate::node::{self, Node};
use crate::up::{self, Children};
use crate::{nats_server, util};

/// What `executablePath` the tests launch; `HERALD_E2E_CHROMIUM` overrides it.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// What the browser tests run on, checked before anything slow starts.
#[derive(Debug)]
pub(crate) struct Tools {
    chromium: String,
    node: Node,
}

/// Chromium and Node.js, installed when missing, or an error that says what to do.
pub(crate) fn ensure_tools() -> Result<Tools, String> {
    let chromium = ensure_chromium()?;
    let node = node::ensure()?;
    eprintln!(
        "xtask: browser tests will use {chromium} and node v{}",
        node.version
    );
    Ok(Tools { chromium, node })
}

/// `cargo xtask e2e [ARGS]`.
pub(crate) fn run(node_args: &[String]) -> Result<ExitCode, String> {
    // First, so a machine that cannot get a browser fails in seconds, not after a build.
    let tools = ensure_tools()?;
    let nats = nats_server::ensure()?;
    run_with(&tools, &nats.path, node_args)
}

/// Builds the services, installs the npm packages, runs the tests against a fresh stack.
pub(crate) fn run_with(
    tools: &Tools,
    nats: &Path,
    node_args: &[String],
) -> Result<ExitCode, String> {
    up::build()?;
    let e2e_dir = util::repo_root().join("tests").join("e2e");
    npm_ci_if_needed(&tools.node, &e2e_dir)?;

    // One scratch directory per run: a fresh JetStream store, so no test sees an older run's
    // events, and logs that a concurrent `cargo xtask up` does not overwrite.
    let scratch = util::herald_dir().join("e2e");
    let store = scratch.join(format!("nats-store-{}", process::id()));
    let logs = scratch.join("logs");
    util::create_dir_all(&logs)?;
    let result = run_stack(nats, tools, &store, logs, &e2e_dir, node_args);
    // Best effort: a leftover store is git-ignored and only costs disk.
    let _ = fs::remove_dir_all(&store);
    result
}

fn run_stack(
    nats: &Path,
    tools: &Tools,
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
    ] = util::free_ports()?;
    let secret = up::random_secret()?;
    let publisher_url = format!("http://127.0.0.1:{publisher_port}");
    // Dropped on every way out of here: stops the services, newest first.
    let mut children = Children::new(logs.clone());
    let ports = up::Ports {
        nats: nats_port,
        monitor: monitor_port,
        publisher: publisher_port,
        edges: [("edge-a", edge_a_port), ("edge-b", edge_b_port)],
    };
    up::start_stack(&mut children, nats, store, "herald-e2e", &ports, &secret)?;
    let edge_a_pid = children.pid("edge-a").expect("edge-a was just started");

    eprintln!(
        "xtask: running the browser tests (edges :{edge_a_port} and :{edge_b_port}, publisher \
         :{publisher_port}; logs in {})",
        logs.display()
    );
    // Node sorts the files it is given, so the one that kills edge-a runs in a second
    // invocation, after every other file has had both edges.
    let (last, first): (Vec<PathBuf>, Vec<PathBuf>) = test_files(e2e_dir)?
        .into_iter()
        .partition(|path| path.ends_with(KILLS_AN_EDGE));
    let mut status = None;
    for files in [first, last].into_iter().filter(|files| !files.is_empty()) {
        let mut node = tools.node.node();
        node.arg("--test")
            // One file at a time: two Chromiums at once on a small CI box only add timing
            // noise.
            .arg("--test-concurrency=1")
            .args(node_args)
            // The files by name: Node 20 searches a folder given as an argument, Node 22+
            // takes arguments as globs.
            .args(files)
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
            .env("HERALD_E2E_CHROMIUM", &tools.chromium)
            .env("HERALD_E2E_SCREENSHOT", "1");
        let ran = util::run(&mut node)?;
        // The first failure is the one reported.
        if status.is_none_or(|status: std::process::ExitStatus| status.success()) {
            status = Some(ran);
        }
    }
    let status = status.ok_or("no browser test files")?;
    drop(children);
    if !status.success() {
        eprintln!(
            "xtask: browser tests failed ({status}); service logs are in {}",
            logs.display()
        );
    }
    Ok(util::exit_code(status))
}

/// The file whose test SIGKILLs edge-a for the rest of the run: it runs on its own, last, so
/// every other file may use both edges.
const KILLS_AN_EDGE: &str = "failover.test.mjs";

/// `tests/e2e/*.test.mjs`, in name order.
fn test_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no *.test.mjs files in {}", dir.display()));
    }
    Ok(files)
}

/// `HERALD_E2E_CHROMIUM` if set (it must run), else `/usr/bin/chromium`, installed from
/// Debian's packages when missing.
fn ensure_chromium() -> Result<String, String> {
    if let Ok(custom) = env::var("HERALD_E2E_CHROMIUM") {
        return if runs(&custom) {
            Ok(custom)
        } else {
            Err(format!(
                "HERALD_E2E_CHROMIUM={custom} does not run (`{custom} --version` failed)"
            ))
        };
    }
    if !runs(DEFAULT_CHROMIUM) {
        install_chromium()?;
    }
    if runs(DEFAULT_CHROMIUM) {
        Ok(DEFAULT_CHROMIUM.to_owned())
    } else {
        Err(format!(
            "{DEFAULT_CHROMIUM} does not run after installing Debian's chromium package"
        ))
    }
}

fn runs(chromium: &str) -> bool {
    Command::new(chromium)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `apt-get install chromium`, as root or through `sudo -n`. The browser is never downloaded by
/// the test tools themselves.
fn install_chromium() -> Result<(), String> {
    const HINT: &str = "the browser tests need Chromium: install Debian/Ubuntu's `chromium` \
         package, or set HERALD_E2E_CHROMIUM to a Chromium or Chrome binary";
    if !Path::new("/usr/bin/apt-get").exists() {
        return Err(format!(
            "{DEFAULT_CHROMIUM} not found and no apt-get; {HINT}"
        ));
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    let apt = |args: &[&str]| {
        let mut cmd = if is_root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(io::stderr());
        match util::run(&mut cmd) {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!(
                "apt-get {} failed ({status}); {HINT}",
                args.join(" ")
            )),
            Err(e) => Err(format!("{e}; {HINT}")),
        }
    };
    eprintln!("xtask: {DEFAULT_CHROMIUM} not found; installing Debian's chromium package");
    apt(&["update", "-q"])?;
    apt(&["install", "-y", "-q", "chromium"])
}

/// `npm ci` from the committed lockfile, unless `node_modules` is already there. playwright-core
/// downloads no browser; the tests use the system's Chromium.
fn npm_ci_if_needed(node: &Node, dir: &Path) -> Result<(), String> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the browser tests' npm packages (npm ci in {})",
        dir.display()
    );
    let mut npm = node.npm();
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
