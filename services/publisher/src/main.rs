//! Run with `cargo run -p herald-publisher -- --help`.

use clap::Parser;
use herald_publisher::{Args, Config};
use herald_shared::{net, shutdown, telemetry};

/// `EX_USAGE` from sysexits.h: the configuration is wrong.
const EX_USAGE: i32 = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log.log_format);
    let config = match Config::try_from(args) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err}");
            std::process::exit(EX_USAGE);
        }
    };
    let listener = net::bind(config.listen)?;
    herald_publisher::run(config, listener, shutdown::signal()).await
}
