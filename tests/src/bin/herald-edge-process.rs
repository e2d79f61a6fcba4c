//! An edge as a process of its own, for tests that must SIGKILL one (an
//! in-process edge cannot die without a word: its NATS connection and tasks
//! would live on). Flags and env as `herald-edge`; it binds `--listen` and
//! prints `listening <addr>` on stdout before serving.

#![allow(clippy::print_stdout)]

use std::io::Write as _;

use clap::Parser;
use herald_edge::{Args, Config};
use herald_shared::{net, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = telemetry::init(args.log.log_format, "herald-edge");
    let config = Config::try_from(args)?;
    let listener = net::bind(config.listen)?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    herald_edge::run(config, listener, shutdown::signal()).await
}
