//! `cargo xtask`: command-line dispatch and help for Herald's project automation.
//!
//! std only, so a fresh checkout can run it with nothing but a Rust toolchain (plus
//! python3 the first time, to fetch nats-server).

// A CLI talks to its user through stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

// Process control (chmod, SIGTERM via `kill`, /dev/urandom) assumes a Unix host.
#[cfg(not(unix))]
compile_error!("xtask supports Linux and macOS only");

mod bench;
mod e2e;
mod nats_server;
mod node;
mod signals;
mod up;
mod util;
mod wheel;

use std::env;
use std::process::ExitCode;

const HELP: &str = "\
Usage: cargo xtask <command>

Commands:
  nats-server   ensure nats-server (>= 2.11 on PATH, else the pinned one in .herald/bin) and print its path
  test [ARGS]   run `cargo test --workspace --locked [ARGS]` with HERALD_NATS_SERVER set,
                then the browser tests (installing Chromium and Node.js when missing)
  up [--free-ports] [--no-build]
                run NATS, the publisher and two edges locally until Ctrl-C (or SIGTERM);
                --free-ports picks free ports (beside another stack), --no-build runs what is built
  e2e [ARGS]    only the browser tests (tests/e2e/) in headless Chromium, on a stack of their own;
                ARGS go to `node --test`, e.g. --test-name-pattern=failover
  bench [ARGS]  the benchmarks (release build, bench/), results in target/bench/<time>/;
                ARGS go to herald-bench, e.g. --scenario unicast --quick
  schemas       regenerate the JSON schemas (HERALD_UPDATE_SCHEMAS=1)
  help          show this list";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            println!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        Some("nats-server") => nats_server::ensure().map(|nats| {
            // Only the path goes to stdout so scripts can use `$(cargo xtask nats-server)`.
            println!("{}", nats.path.display());
            ExitCode::SUCCESS
        }),
        Some("test") => test(&args[1..]),
        Some("up") => up::run(&args[1..]).map(|()| ExitCode::SUCCESS),
        Some("e2e") => e2e::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("schemas") => schemas(),
        Some(other) => Err(format!("unknown command `{other}`; see `cargo xtask help`")),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the whole test suite: the Rust tests against a known-good nats-server, then the browser
/// tests. Both run even when the first fails, so one run shows every failure. With arguments
/// (a test filter, say) only the Rust tests run.
fn test(extra_args: &[String]) -> Result<ExitCode, String> {
    let nats = nats_server::ensure()?;
    eprintln!(
        "xtask: using nats-server v{} at {}",
        nats.version,
        nats.path.display()
    );
    // Before the long build: a machine that cannot get a browser fails now.
    let browser = if extra_args.is_empty() {
        Some(e2e::ensure_tools()?)
    } else {
        None
    };
    // The services' binaries first: the test of `up` runs them, as the browser tests do.
    up::build()?;
    let mut cargo = util::cargo();
    cargo
        .args(["test", "--workspace", "--locked"])
        .args(extra_args)
        .env("HERALD_NATS_SERVER", &nats.path);
    let rust = util::run(&mut cargo)?;
    let Some(browser) = browser else {
        // `cargo xtask test resume` means "the resume tests", not the browser too.
        eprintln!("xtask: arguments given, so the browser tests were not run (`cargo xtask e2e`)");
        return Ok(util::exit_code(rust));
    };
    let browser = e2e::run_with(&browser, &nats.path, &[])?;
    if !rust.success() {
        eprintln!("xtask: the Rust tests failed ({rust})");
        return Ok(util::exit_code(rust));
    }
    Ok(browser)
}

/// The schema test rewrites the committed files instead of comparing when the variable is set.
fn schemas() -> Result<ExitCode, String> {
    let mut cargo = util::cargo();
    cargo
        .args(["test", "-p", "herald-tests", "--test", "it", "schemas"])
        .env("HERALD_UPDATE_SCHEMAS", "1");
    util::run(&mut cargo).map(util::exit_code)
}
