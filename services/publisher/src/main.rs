//! Run with `cargo run -p herald-publisher -- --help`.

use clap::Parser;
use herald_publisher::{Args, Config};
use herald_shared::{net, shutdown, telemetry};

/// `EX_USAGE` from sysexits.h: the configuration is wrong.
const EX_USAGE: i32 = 64;

/// mimalloc rather than glibc's malloc: 20% less CPU per event in the
/// `publisher` benchmark (docs/benchmarks.md). The edge keeps glibc's, which
/// holds an idle socket in 40% less memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = telemetry::init(args.log.log_format, "herald-publisher");
    let config = match Config::try_from(args) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err}");
            std::process::exit(EX_USAGE);
        }
    };
    let listener = net::bind(config.listen)?;
    let ran = herald_publisher::run(config, listener, shutdown::signal()).await;
    // After the drain, so its spans are exported too.
    telemetry.shutdown().await;
    ran
}
