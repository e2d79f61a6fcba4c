//! CPU accounting over a measurement window: the server processes (edges, publisher,
//! nats-server), this load generator, and everything else on the machine, from two samples of
//! `/proc`. Interrupt time (irq, softirq) is reported on its own: the kernel charges it to no
//! process, and on loopback most of it is the benchmark's own packets.

use std::time::Instant;

use serde::Serialize;

use crate::procfs::{self, MachineTicks};

/// Above this many cores used by other processes (or taken by the hypervisor), a window counts
/// as disturbed.
const OTHER_BUSY_CORES: f64 = 0.2;

/// The processes whose CPU is the server's.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    processes: Vec<(String, u32)>,
}

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    at: Instant,
    server: Vec<u64>,
    own: u64,
    machine: MachineTicks,
}

/// What was used between two samples.
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    pub(crate) wall_s: f64,
    pub(crate) server_cpu_s: f64,
    /// Per server process: (name, CPU seconds).
    pub(crate) per_process: Vec<(String, f64)>,
    pub(crate) own_cpu_s: f64,
    /// Busy time of the machine not spent in the server processes or in this one.
    pub(crate) other_cpu_s: f64,
    pub(crate) steal_s: f64,
    /// Machine-wide interrupt time (irq + softirq), charged to no process.
    pub(crate) softirq_s: f64,
}

/// Whether something else competed for the CPU during the window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OtherBusy {
    pub(crate) busy: bool,
    pub(crate) cpu_seconds: f64,
    pub(crate) cores: f64,
    /// Hypervisor steal, in cores (not included in `cores`, but in `busy`).
    pub(crate) steal_cores: f64,
    /// Machine-wide irq + softirq time, in cores: on loopback mostly the packet receive path
    /// of the benchmark's own traffic, so neither "other" nor in the server's numbers.
    pub(crate) softirq_cores: f64,
}

impl Probe {
    pub(crate) fn new(processes: Vec<(String, u32)>) -> Self {
        Self { processes }
    }

    /// Reads the counters now; a process that is gone reads as 0.
    pub(crate) fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            server: self
                .processes
                .iter()
                .map(|(_, pid)| procfs::cpu_ticks(Some(*pid)).unwrap_or(0))
                .collect(),
            own: procfs::cpu_ticks(None).unwrap_or(0),
            machine: procfs::machine_ticks().unwrap_or_default(),
        }
    }

    /// The usage from `start` to `end`.
    pub(crate) fn between(&self, start: &Sample, end: &Sample) -> Usage {
        let per_tick = 1.0 / procfs::ticks_per_sec() as f64;
        let seconds = |a: u64, b: u64| b.saturating_sub(a) as f64 * per_tick;
        let per_process: Vec<(String, f64)> = self
            .processes
            .iter()
            .zip(start.server.iter().zip(&end.server))
            .map(|((name, _), (&a, &b))| (name.clone(), seconds(a, b)))
            .collect();
        let server_cpu_s: f64 = per_process.iter().map(|(_, s)| s).sum();
        let own_cpu_s = seconds(start.own, end.own);
        let machine_s = seconds(start.machine.busy, end.machine.busy);
        Usage {
            wall_s: end.at.duration_since(start.at).as_secs_f64(),
            server_cpu_s,
            per_process,
            own_cpu_s,
            other_cpu_s: (machine_s - server_cpu_s - own_cpu_s).max(0.0),
            steal_s: seconds(start.machine.steal, end.machine.steal),
            softirq_s: seconds(start.machine.softirq, end.machine.softirq),
        }
    }
}

impl Usage {
    pub(crate) fn server_cores(&self) -> f64 {
        ratio(self.server_cpu_s, self.wall_s)
    }

    pub(crate) fn loadgen_cores(&self) -> f64 {
        ratio(self.own_cpu_s, self.wall_s)
    }

    pub(crate) fn other_busy(&self) -> OtherBusy {
        let cores = ratio(self.other_cpu_s, self.wall_s);
        let steal_cores = ratio(self.steal_s, self.wall_s);
        OtherBusy {
            busy: cores + steal_cores > OTHER_BUSY_CORES,
            cpu_seconds: self.other_cpu_s,
            cores,
            steal_cores,
            softirq_cores: ratio(self.softirq_s, self.wall_s),
        }
    }

    /// Cores per server process, by name.
    pub(crate) fn cores_by_process(&self) -> serde_json::Map<String, serde_json::Value> {
        self.per_process
            .iter()
            .map(|(name, s)| (name.clone(), ratio(*s, self.wall_s).into()))
            .collect()
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}
