//! What every client socket reports, gathered in one place: deliveries (unique and
//! duplicated), their latencies in a histogram, welcomes, failed connects, closes by the
//! server, and frames of other kinds.
//!
//! Sockets record into one of a few shards (by socket index), each behind its own mutex, so the
//! reader tasks on different worker threads rarely meet. A scenario takes a snapshot, which
//! merges the shards, and may reset them between measurement steps.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clock;

const SHARDS: usize = 16;
/// Latencies are kept in microseconds, up to 10 minutes, to 3 significant digits.
const MAX_LATENCY_US: u64 = 600_000_000;

/// Shared by every socket of a scenario.
#[derive(Debug)]
pub(crate) struct Recorder {
    shards: Vec<Mutex<Shard>>,
    welcomed: AtomicU64,
    failed: AtomicU64,
    connect_retries: AtomicU64,
    closed_by_server: AtomicU64,
    /// `clock::now_ns` of the latest unique delivery.
    last_receipt_ns: AtomicU64,
    other: Mutex<BTreeMap<String, u64>>,
}

#[derive(Debug)]
struct Shard {
    latency_us: Histogram<u64>,
    delivered: u64,
    duplicated: u64,
}

/// A merged view of every shard.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) delivered: u64,
    pub(crate) duplicated: u64,
    pub(crate) latency_us: Histogram<u64>,
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            welcomed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            connect_retries: AtomicU64::new(0),
            closed_by_server: AtomicU64::new(0),
            last_receipt_ns: AtomicU64::new(0),
            other: Mutex::new(BTreeMap::new()),
        }
    }

    /// A delivery to socket `index`, new to it (`unique`) or a repeat; `sent_ns` is the
    /// publish instant, when the id carried one.
    pub(crate) fn delivery(&self, index: usize, unique: bool, sent_ns: Option<u64>) {
        let now = clock::now_ns();
        let mut shard = self.shards[index % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !unique {
            shard.duplicated += 1;
            return;
        }
        shard.delivered += 1;
        if let Some(sent) = sent_ns {
            let us = now.saturating_sub(sent) / 1000;
            shard
                .latency_us
                .saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
        drop(shard);
        self.last_receipt_ns.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn welcomed(&self) {
        self.welcomed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connect_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connect_retried(&self) {
        self.connect_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed_by_server(&self, why: &str) {
        self.closed_by_server.fetch_add(1, Ordering::Relaxed);
        self.other_frame(&format!("closed:{why}"));
    }

    /// A frame that is neither `welcome` nor `event`, or a notable socket event, by name.
    pub(crate) fn other_frame(&self, kind: &str) {
        let mut other = self.other.lock().unwrap_or_else(PoisonError::into_inner);
        *other.entry(kind.to_owned()).or_default() += 1;
    }

    pub(crate) fn n_welcomed(&self) -> u64 {
        self.welcomed.load(Ordering::Relaxed)
    }

    pub(crate) fn n_failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub(crate) fn n_connect_retries(&self) -> u64 {
        self.connect_retries.load(Ordering::Relaxed)
    }

    pub(crate) fn n_closed_by_server(&self) -> u64 {
        self.closed_by_server.load(Ordering::Relaxed)
    }

    pub(crate) fn last_receipt_ns(&self) -> u64 {
        self.last_receipt_ns.load(Ordering::Relaxed)
    }

    /// Unique deliveries so far (cheaper than a snapshot: no histogram merge).
    pub(crate) fn n_delivered(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).delivered)
            .sum()
    }

    pub(crate) fn other_frames(&self) -> BTreeMap<String, u64> {
        self.other
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The deliveries and latencies so far, merged.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut snapshot = Snapshot {
            delivered: 0,
            duplicated: 0,
            latency_us: new_histogram(),
        };
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            snapshot.delivered += shard.delivered;
            snapshot.duplicated += shard.duplicated;
            // Same bounds on both sides: adding cannot fail.
            let _ = snapshot.latency_us.add(&shard.latency_us);
        }
        snapshot
    }

    /// Forgets deliveries, latencies and welcomes (between measurement steps).
    pub(crate) fn reset(&self) {
        for shard in &self.shards {
            *shard.lock().unwrap_or_else(PoisonError::into_inner) = Shard::new();
        }
        self.welcomed.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
        self.last_receipt_ns.store(0, Ordering::Relaxed);
    }
}

impl Shard {
    fn new() -> Self {
        Self {
            latency_us: new_histogram(),
            delivered: 0,
            duplicated: 0,
        }
    }
}

/// An empty latency histogram in microseconds.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

impl Latency {
    /// `None` for an empty histogram.
    pub(crate) fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        })
    }
}
