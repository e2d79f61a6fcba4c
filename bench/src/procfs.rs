//! Readings from `/proc`: a process's resident memory and CPU time, and the whole machine's
//! busy time. Linux only, like the services' deployment.

use std::{fs, process::Command, sync::OnceLock};

use anyhow::Context as _;

/// Resident memory (`VmRSS` in `/proc/<pid>/status`), in bytes.
pub(crate) fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// The process's user + system CPU time (`utime` + `stime`, all threads), in clock ticks.
/// `None` reads this process.
pub(crate) fn cpu_ticks(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu(&stat).with_context(|| format!("parsing {path}"))
}

/// `utime` and `stime` are fields 14 and 15; the command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its closing parenthesis.
fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's CPU time from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MachineTicks {
    /// user + nice + system: what ran in processes.
    pub(crate) busy: u64,
    /// irq + softirq: interrupt work, which this kernel does not charge to any process (on
    /// loopback, mostly the receive path of the benchmark's own traffic).
    pub(crate) softirq: u64,
    /// Time the hypervisor gave to someone else.
    pub(crate) steal: u64,
}

pub(crate) fn machine_ticks() -> anyhow::Result<MachineTicks> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| values.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user.
    Ok(MachineTicks {
        busy: at(0) + at(1) + at(2),
        softirq: at(5) + at(6),
        steal: at(7),
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we know of). Asked once.
pub(crate) fn ticks_per_sec() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_is_read_after_the_command_name() {
        let stat = "42 (herald edge) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu(stat), Some(12));
    }
}
