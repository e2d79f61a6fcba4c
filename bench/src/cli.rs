//! The command line: where the binaries are, where the results go, which scenarios to run.

use std::{fmt, path::PathBuf};

use clap::{Parser, ValueEnum};

/// Load generator for Herald: starts nats-server, herald-publisher and two herald-edge processes
/// per scenario, drives them, and prints one JSON line per scenario (also appended to
/// `<out>/results.jsonl`, and tabulated in `<out>/results.md`).
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// The nats-server binary (2.11 or newer).
    #[arg(long)]
    pub nats_server: PathBuf,
    /// Where `herald-publisher`, `herald-edge` and (for `rpc`) `calendar-service` are, e.g.
    /// `target/release`.
    #[arg(long)]
    pub bin_dir: PathBuf,
    /// Directory for results.jsonl, results.md and the services' logs.
    #[arg(long)]
    pub out: PathBuf,
    /// A scenario to run; repeatable [default: all, in the listed order].
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// A smoke test: 2 s windows and a fifth of the sockets.
    #[arg(long)]
    pub quick: bool,
}

/// What one run measures, each against a fresh stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 10,000 idle sockets: edge memory per socket.
    Idle,
    /// 10,000 idle sockets in 1,000 team namespaces: presence writes per second.
    IdlePresence,
    /// Idle sockets on ONE edge in steps up to 19,000: memory and CPU per socket at each.
    IdleScaling,
    /// 1,000 sockets, 2,000 events/s, each to one user.
    Unicast,
    /// 1,000 sockets in one namespace, 20 broadcasts/s.
    #[value(name = "broadcast-1k")]
    Broadcast1k,
    /// 5,000 sockets in one namespace, 20 broadcasts/s.
    #[value(name = "broadcast-5k")]
    Broadcast5k,
    /// 2,000 sockets in one namespace, broadcast rate stepped up until latency or loss breaks.
    Saturation,
    /// No sockets: 64 HTTP clients posting as fast as they can.
    Publisher,
    /// No sockets: 64 HTTP clients posting batches of 100 events as fast as they can.
    #[value(name = "publisher-batch")]
    PublisherBatch,
    /// 50,000 domain events published to NATS, consumed by the publisher.
    NatsIngest,
    /// 10,000 sockets close at once, miss events, and resume with their cursors at once.
    ReconnectStorm,
    /// `broadcast-1k` and `unicast` on one nats-server and on a 3-node cluster with R3 streams.
    Cluster,
    /// 100 sockets call the example calendar service through the edges (`rpc` frames).
    Rpc,
}

impl Scenario {
    /// Every scenario, in the order they run by default.
    pub const ALL: [Scenario; 13] = [
        Scenario::Idle,
        Scenario::IdlePresence,
        Scenario::IdleScaling,
        Scenario::Unicast,
        Scenario::Broadcast1k,
        Scenario::Broadcast5k,
        Scenario::Saturation,
        Scenario::Publisher,
        Scenario::PublisherBatch,
        Scenario::NatsIngest,
        Scenario::ReconnectStorm,
        Scenario::Cluster,
        Scenario::Rpc,
    ];

    /// The name used on the command line and in the reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::IdlePresence => "idle-presence",
            Scenario::IdleScaling => "idle-scaling",
            Scenario::Unicast => "unicast",
            Scenario::Broadcast1k => "broadcast-1k",
            Scenario::Broadcast5k => "broadcast-5k",
            Scenario::Saturation => "saturation",
            Scenario::Publisher => "publisher",
            Scenario::PublisherBatch => "publisher-batch",
            Scenario::NatsIngest => "nats-ingest",
            Scenario::ReconnectStorm => "reconnect-storm",
            Scenario::Cluster => "cluster",
            Scenario::Rpc => "rpc",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
