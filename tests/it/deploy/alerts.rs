//! deploy/prometheus/alerts.yaml: every rule is complete, and every Herald metric it reads is
//! one the services export (as the README's metric tables list them), so a renamed metric
//! cannot leave an alert that silently never fires.

use std::collections::BTreeSet;

use super::{read, repo, seq, str_at, yaml};

/// `prefix` + the first column of each row of the README table that follows `heading`.
fn readme_families(readme: &str, heading: &str, prefix: &str) -> BTreeSet<String> {
    let table = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README: no {heading}"));
    table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| row.split('`').nth(1))
        .map(|name| format!("{prefix}{name}"))
        .collect()
}

#[test]
fn alert_rules_are_complete_and_read_metrics_that_exist() {
    let readme = read(&repo().join("README.md"));
    let mut families = readme_families(
        &readme,
        "`herald-edge`, prefix `herald_edge_`:",
        "herald_edge_",
    );
    families.extend(readme_families(
        &readme,
        "`herald-publisher`, prefix `herald_publisher_`:",
        "herald_publisher_",
    ));
    assert!(
        families.contains("herald_edge_delivery_latency_seconds"),
        "{families:?}"
    );

    let rules = yaml(
        &read(&repo().join("deploy/prometheus/alerts.yaml")),
        "alerts.yaml",
    );
    let mut names = BTreeSet::new();
    let mut read_families = BTreeSet::new();
    for group in seq(&rules, &["groups"], "alerts.yaml") {
        for rule in seq(group, &["rules"], "alerts.yaml") {
            let name = str_at(rule, &["alert"], "alerts.yaml");
            assert!(names.insert(name.to_owned()), "{name} twice");
            assert!(
                matches!(
                    str_at(rule, &["labels", "severity"], name),
                    "page" | "ticket"
                ),
                "{name}: severity"
            );
            for annotation in ["summary", "action"] {
                str_at(rule, &["annotations", annotation], name);
            }
            if let Some(duration) = rule.get("for") {
                let d = duration.as_str().unwrap();
                assert!(d.ends_with('m') || d.ends_with('s'), "{name}: for {d}");
            }
            let expr = str_at(rule, &["expr"], name);
            let metrics: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("herald_"))
                .collect();
            assert!(!metrics.is_empty(), "{name} reads no Herald metric");
            for metric in metrics {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| metric.strip_suffix(suffix))
                    .filter(|f| families.contains(*f))
                    .unwrap_or(metric);
                assert!(families.contains(family), "{name}: no metric {metric}");
                read_families.insert(family.to_owned());
            }
        }
    }
    // Each failure a service reports by itself has an alert.
    for family in [
        "herald_edge_nats_connected",
        "herald_publisher_nats_connected",
        "herald_publisher_events_total",
        "herald_publisher_dead_lettered_total",
        "herald_edge_delivery_latency_seconds",
    ] {
        assert!(read_families.contains(family), "no alert reads {family}");
    }
}
