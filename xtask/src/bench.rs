//! `cargo xtask bench [ARGS]`: builds the services, the example calendar service and the load
//! generator in release mode and runs `herald-bench` (bench/), which starts its own NATS,
//! publisher and edges (and, for `rpc`, calendar services) per scenario.
//!
//! Results go to `target/bench/<unix time>/` (results.jsonl, results.md, the services' logs);
//! ARGS go to herald-bench, e.g. `--scenario unicast --quick`.

use std::fs;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{nats_server, util};

pub(crate) fn run(args: &[String]) -> Result<ExitCode, String> {
    let nats = nats_server::ensure()?;
    eprintln!(
        "xtask: building herald-edge, herald-publisher, calendar-service and herald-bench (release)"
    );
    let mut build = util::cargo();
    build.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "herald-edge",
        "-p",
        "herald-publisher",
        // The example domain service the `rpc` scenario calls through the edges.
        "-p",
        "calendar-service",
        "-p",
        "herald-bench",
    ]);
    let status = util::run(&mut build)?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }

    let bin = util::target_dir().join("release");
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let out = util::target_dir().join("bench").join(stamp.to_string());
    util::create_dir_all(&out)?;
    let mut bench = std::process::Command::new(bin.join("herald-bench"));
    bench
        .arg("--nats-server")
        .arg(&nats.path)
        .arg("--bin-dir")
        .arg(&bin)
        .arg("--out")
        .arg(&out)
        .args(args);
    let status = util::run(&mut bench)?;
    if let Ok(table) = fs::read_to_string(out.join("results.md")) {
        println!("\n{table}");
    }
    eprintln!("xtask: results in {}", out.display());
    Ok(util::exit_code(status))
}
