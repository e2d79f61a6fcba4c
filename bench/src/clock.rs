//! The one clock every latency is read from: nanoseconds since a process-wide base instant.
//!
//! The publish side writes `now_ns()` into the event's `id`; the receiving socket subtracts it
//! from its own `now_ns()`. Both run in this process, so no wall clock and no clock sync is
//! involved, and the event schema needs no extra field.

use std::{sync::OnceLock, time::Instant};

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process (monotonic).
pub(crate) fn now_ns() -> u64 {
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The event id that carries its publish instant: `b<nanos>-<counter>`.
pub(crate) fn event_id(sent_ns: u64, counter: u64) -> String {
    format!("b{sent_ns}-{counter}")
}
