//! What the services and the sockets said besides the numbers, added to every report: the
//! edges' delivery-health counters from `/metrics`, warnings and errors in the services' logs,
//! and socket events other than deliveries (closes by the server, unexpected frames). These
//! are where a problem in Herald shows first.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{recorder::Recorder, report::Report, stack::Stack};

/// Edge counters worth seeing after a run (summed over both edges, all label sets).
const EDGE_COUNTERS: [&str; 9] = [
    "herald_edge_deliveries_total",
    "herald_edge_rpc_calls_total",
    "herald_edge_slow_consumer_disconnects_total",
    "herald_edge_gaps_repaired_total",
    "herald_edge_repaired_events_total",
    "herald_edge_replays_total",
    "herald_edge_replayed_events_total",
    "herald_edge_history_truncated_total",
    "herald_edge_auth_failures_total",
];
/// Log lines kept as samples per service.
const SAMPLES: usize = 3;

/// Adds `services_exited`, `edge_metrics`, `service_log_warnings` and `socket_events` to
/// `report`.
pub(crate) async fn add(stack: &mut Stack, recorder: Option<&Recorder>, report: &mut Report) {
    let exited = stack.exited_services();
    if !exited.is_empty() {
        report.extra("services_exited", exited);
    }
    if !stack.edges.is_empty() {
        let texts = stack.edge_metrics().await;
        let counters: Map<String, Value> = EDGE_COUNTERS
            .iter()
            .map(|name| {
                let total: f64 = texts.iter().map(|text| sum_samples(text, name)).sum();
                let short = name
                    .trim_start_matches("herald_edge_")
                    .trim_end_matches("_total");
                (short.to_owned(), json!(total.round() as u64))
            })
            .collect();
        report.extra("edge_metrics", counters);
    }
    let mut warnings = Map::new();
    for (name, text) in stack.logs() {
        let flagged: Vec<String> = text
            .lines()
            .map(strip_ansi)
            .filter(|line| {
                // tracing's plain format, and nats-server's.
                [" WARN ", " ERROR ", "[WRN]", "[ERR]", "[FTL]"]
                    .iter()
                    .any(|level| line.contains(level))
            })
            .collect();
        if !flagged.is_empty() {
            let samples: Vec<String> = flagged
                .iter()
                .take(SAMPLES)
                .map(|line| line.chars().take(300).collect())
                .collect();
            warnings.insert(name, json!({ "count": flagged.len(), "samples": samples }));
        }
    }
    if !warnings.is_empty() {
        report.extra("service_log_warnings", warnings);
    }
    if let Some(recorder) = recorder {
        let events: BTreeMap<String, u64> = recorder.other_frames();
        if !events.is_empty() {
            report.extra("socket_events", events);
        }
        if recorder.n_connect_retries() > 0 {
            report.extra("connect_retries", recorder.n_connect_retries());
        }
    }
}

/// The sum of every sample of metric `name` in a Prometheus text exposition.
pub(super) fn sum_samples(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = if rest.starts_with('{') {
                &rest[rest.find('}')? + 1..]
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

/// The line without terminal color codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_one_metric_are_summed_across_labels() {
        let text = "# TYPE x counter\nherald_edge_replays_total 2\nherald_edge_replays_total_x 9\n\
                    herald_edge_auth_failures_total{code=\"A\"} 1\nherald_edge_auth_failures_total{code=\"B\"} 3\n";
        assert_eq!(sum_samples(text, "herald_edge_replays_total"), 2.0);
        assert_eq!(sum_samples(text, "herald_edge_auth_failures_total"), 4.0);
    }

    #[test]
    fn color_codes_are_stripped() {
        assert_eq!(strip_ansi("a \u{1b}[33mWARN\u{1b}[0m b"), "a WARN b");
    }
}
