use std::time::Duration;

use super::*;

/// The value of the sample line `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_family_is_exported_under_its_prefixed_name() {
    let text = Metrics::new().render(true);
    for name in [
        "herald_edge_connections",
        "herald_edge_connections_opened_total",
        "herald_edge_deliveries_total",
        "herald_edge_delivery_latency_seconds",
        "herald_edge_replays_total",
        "herald_edge_replays_running",
        "herald_edge_replayed_events_total",
        "herald_edge_history_truncated_total",
        "herald_edge_gaps_repaired_total",
        "herald_edge_repaired_events_total",
        "herald_edge_slow_consumer_disconnects_total",
        "herald_edge_auth_failures_total",
        "herald_edge_nats_connected",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from:\n{text}"
        );
    }
    assert_eq!(sample(&text, "herald_edge_nats_connected"), Some(1.0));
    assert_eq!(
        sample(&text, r#"herald_edge_connections{transport="sse"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herald_edge_auth_failures_total{code="EXPIRED_TOKEN"}"#
        ),
        Some(0.0)
    );
}

#[test]
fn a_connection_counts_as_open_until_its_guard_drops() {
    let metrics = Metrics::new();
    let guard = metrics.connection_opened(Transport::WebSocket);
    let open = r#"herald_edge_connections{transport="websocket"}"#;
    assert_eq!(sample(&metrics.render(true), open), Some(1.0));
    drop(guard);
    let text = metrics.render(false);
    assert_eq!(sample(&text, open), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"herald_edge_connections_opened_total{transport="websocket"}"#
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "herald_edge_nats_connected"), Some(0.0));
}

#[test]
fn events_are_counted_and_only_live_ones_have_a_latency() {
    let metrics = Metrics::new();
    let stored_at = SystemTime::now() - Duration::from_millis(3);
    metrics.frames_written([
        FrameKind::Control,
        FrameKind::Replayed { seq: 1 },
        FrameKind::Live {
            seq: 2,
            stored_at: Some(stored_at),
        },
        FrameKind::Live {
            seq: 3,
            stored_at: None,
        },
    ]);
    metrics.slow_consumer();
    metrics.auth_failed(ErrorCode::InvalidToken);
    let text = metrics.render(true);
    assert_eq!(sample(&text, "herald_edge_deliveries_total"), Some(3.0));
    assert_eq!(
        sample(&text, "herald_edge_delivery_latency_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herald_edge_delivery_latency_seconds_bucket{le="0.0005"}"#
        ),
        Some(0.0),
        "3 ms is above the first bucket"
    );
    assert_eq!(
        sample(&text, "herald_edge_slow_consumer_disconnects_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herald_edge_auth_failures_total{code="INVALID_TOKEN"}"#
        ),
        Some(1.0)
    );
}
