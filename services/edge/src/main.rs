//! Run with `cargo run -p herald-edge -- --help`.

use clap::Parser;
use herald_edge::{Args, Config};
use herald_shared::{net, shutdown, telemetry};

/// `EX_USAGE` from sysexits.h: the configuration is wrong.
const EX_USAGE: i32 = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = telemetry::init(args.log.log_format, "herald-edge");
    let config = match Config::try_from(args) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err}");
            std::process::exit(EX_USAGE);
        }
    };
    let listener = net::bind(config.listen)?;
    let ran = herald_edge::run(config, listener, shutdown::signal()).await;
    // After the drain, so its spans are exported too.
    telemetry.shutdown().await;
    ran
}
