//! Run with `cargo run -p calendar-service -- --help`.

use calendar_service::{Args, Config};
use clap::Parser;
use herald_shared::{shutdown, telemetry};

/// `EX_USAGE` from sysexits.h: the configuration is wrong.
const EX_USAGE: i32 = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = telemetry::init(args.log.log_format, "calendar-service");
    let config = match Config::try_from(args) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err}");
            std::process::exit(EX_USAGE);
        }
    };
    let ran = calendar_service::run(config, shutdown::signal()).await;
    // After the drain, so its spans are exported too.
    telemetry.shutdown().await;
    ran
}
