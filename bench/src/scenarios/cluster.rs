//! `cluster`: what replication costs. `broadcast-1k` and `unicast`, each first on one
//! nats-server (every stream at one replica) and then on a 3-node JetStream cluster (the
//! publisher with `--stream-replicas 3`, so every stored notification is acked by a quorum of
//! two; each service with the whole cluster as its seed list, starting at another node), four
//! fresh stacks in all. `runs` holds the four runs' lines, each with the same fields as the
//! `broadcast-1k` and `unicast` lines (`scenario` `cluster/<single|r3>/<broadcast|unicast>`);
//! the `*_ratio` fields are R3 over single, so 1.0 means replication costs nothing. The main
//! fields sum the four runs' counts (`lost` and `duplicated` must be 0).

use serde_json::{Value, json};

use super::{Ctx, broadcast, unicast};
use crate::{report::Report, stack::Nats};

/// Sockets of the broadcast runs, as `broadcast-1k`.
const BROADCAST_SOCKETS: usize = 1_000;

/// Which measurement a run repeats.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Broadcast,
    Unicast,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Broadcast => "broadcast",
            Kind::Unicast => "unicast",
        }
    }
}

/// The numbers compared, as JSON pointers into a run's line: latency, server CPU per delivery
/// (NATS's share grows with replication), and the publisher's HTTP answer time (a publish is
/// answered when the stream has stored it, on a cluster after a quorum has).
const COMPARED: [(&str, &str); 5] = [
    ("p50", "/latency_ms/p50"),
    ("p99", "/latency_ms/p99"),
    ("cpu_us_per_delivery", "/server_cpu_us_per_delivery"),
    ("http_p99", "/http_latency_ms/p99"),
    ("deliveries_per_sec", "/deliveries_per_sec"),
];

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mut runs: Vec<Value> = Vec::new();
    let mut errors = Vec::new();
    for nats in [Nats::Single, Nats::Cluster] {
        for kind in [Kind::Broadcast, Kind::Unicast] {
            let name = format!("cluster/{}/{}", nats.name(), kind.name());
            let logs = format!("cluster-{}-{}", nats.name(), kind.name());
            let mut run = Report::new(&name);
            let started = std::time::Instant::now();
            let result = match kind {
                Kind::Broadcast => {
                    broadcast::run_on(ctx, &logs, nats, BROADCAST_SOCKETS, &mut run).await
                }
                Kind::Unicast => unicast::run_on(ctx, &logs, nats, &mut run).await,
            };
            if let Err(err) = result {
                errors.push(format!("{name}: {err:#}"));
                run.error = Some(format!("{err:#}"));
            }
            run.wall_seconds = started.elapsed().as_secs_f64();
            report.sockets = report.sockets.max(run.sockets);
            report.events_published += run.events_published;
            report.deliveries_expected += run.deliveries_expected;
            report.delivered += run.delivered;
            report.lost += run.lost;
            report.duplicated += run.duplicated;
            report.publish_errors += run.publish_errors;
            runs.push(serde_json::from_str(&run.to_line())?);
        }
    }
    for kind in [Kind::Broadcast, Kind::Unicast] {
        let line = |nats: Nats| {
            let name = format!("cluster/{}/{}", nats.name(), kind.name());
            runs.iter().find(|r| r["scenario"] == name.as_str())
        };
        let (Some(single), Some(r3)) = (line(Nats::Single), line(Nats::Cluster)) else {
            continue;
        };
        for (key, pointer) in COMPARED {
            let ratio = ratio(single.pointer(pointer), r3.pointer(pointer));
            report.extra(&format!("{}_{key}_ratio", kind.name()), ratio);
        }
    }
    report.extra("replicas", json!({ "single": 1, "r3": 3 }));
    report.extra("runs", runs);
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// `r3 / single`, when both are positive numbers.
fn ratio(single: Option<&Value>, r3: Option<&Value>) -> Value {
    match (single.and_then(Value::as_f64), r3.and_then(Value::as_f64)) {
        (Some(a), Some(b)) if a > 0.0 => json!(b / a),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_r3_over_single_and_null_without_a_base() {
        assert_eq!(ratio(Some(&json!(2.0)), Some(&json!(3.0))), json!(1.5));
        assert_eq!(ratio(Some(&json!(0.0)), Some(&json!(3.0))), Value::Null);
        assert_eq!(ratio(None, Some(&json!(3.0))), Value::Null);
    }
}
