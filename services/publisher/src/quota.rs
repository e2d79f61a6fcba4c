//! The per-service quota: events/s and stored bytes/s per token `sub`, as a
//! token bucket per service and dimension, each holding one second's worth
//! (the bytes bucket at least one largest event, so every event that passes
//! the per-event bound can pass here too).
//!
//! Hand-written rather than `governor`: an event takes from both buckets or
//! from neither, which two independent limiters cannot promise, and the
//! refusal needs the wait until both would allow it (`Retry-After`).
//!
//! The map holds only services seen within about one refill period: a bucket
//! idle that long is full, no different from a new one, and is dropped by a
//! sweep that runs at most once per period.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::PublishLimits;

/// The allowances of every service that published recently.
#[derive(Debug)]
pub(crate) struct Quotas {
    events: Option<Rate>,
    bytes: Option<Rate>,
    /// How long an untouched bucket takes to fill: then it is dropped.
    idle_after: Duration,
    state: Mutex<State>,
}

/// One dimension's refill rate and bucket size.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_sec: f64,
    capacity: f64,
}

#[derive(Debug)]
struct State {
    by_sub: HashMap<String, Bucket>,
    last_sweep: Instant,
}

/// One service's tokens, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    events: f64,
    bytes: f64,
    at: Instant,
}

/// The quota refused an event; it would fit after this long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OverQuota(pub(crate) Duration);

impl OverQuota {
    /// Whole seconds, rounded up and at least 1, for `Retry-After`.
    pub(crate) fn retry_after_secs(self) -> u64 {
        (self.0.as_secs_f64().ceil() as u64).max(1)
    }
}

impl Quotas {
    pub(crate) fn new(limits: &PublishLimits) -> Self {
        let events = (limits.quota_events_per_sec > 0).then(|| {
            let per_sec = f64::from(limits.quota_events_per_sec);
            Rate {
                per_sec,
                capacity: per_sec,
            }
        });
        let bytes = (limits.quota_bytes_per_sec > 0).then(|| Rate {
            per_sec: limits.quota_bytes_per_sec as f64,
            capacity: limits
                .quota_bytes_per_sec
                .max(limits.max_event_stored_bytes) as f64,
        });
        let idle_after = [events, bytes]
            .into_iter()
            .flatten()
            .map(|rate| Duration::from_secs_f64(rate.capacity / rate.per_sec))
            .max()
            .unwrap_or_default();
        Self {
            events,
            bytes,
            idle_after,
            state: Mutex::new(State {
                by_sub: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Takes one event storing `stored_bytes` from `sub`'s allowance, or says
    /// how long until it would fit; a refused event takes nothing.
    pub(crate) fn take(&self, sub: &str, stored_bytes: u64) -> Result<(), OverQuota> {
        self.take_at(sub, stored_bytes, Instant::now())
    }

    fn take_at(&self, sub: &str, stored_bytes: u64, now: Instant) -> Result<(), OverQuota> {
        if self.events.is_none() && self.bytes.is_none() {
            return Ok(());
        }
        let mut state = self.state.lock().expect("quota lock");
        if now.saturating_duration_since(state.last_sweep) >= self.idle_after {
            let idle_after = self.idle_after;
            state
                .by_sub
                .retain(|_, bucket| now.saturating_duration_since(bucket.at) < idle_after);
            state.last_sweep = now;
        }
        let full = Bucket {
            events: self.events.map_or(0.0, |rate| rate.capacity),
            bytes: self.bytes.map_or(0.0, |rate| rate.capacity),
            at: now,
        };
        let bucket = state.by_sub.entry(sub.to_owned()).or_insert(full);
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.at = now;
        let mut wait: f64 = 0.0;
        if let Some(rate) = self.events {
            bucket.events = (bucket.events + elapsed * rate.per_sec).min(rate.capacity);
            wait = wait.max((1.0 - bucket.events) / rate.per_sec);
        }
        if let Some(rate) = self.bytes {
            bucket.bytes = (bucket.bytes + elapsed * rate.per_sec).min(rate.capacity);
            // Never more than a full bucket, so every event fits eventually.
            let cost = (stored_bytes as f64).min(rate.capacity);
            wait = wait.max((cost - bucket.bytes) / rate.per_sec);
        }
        if wait > 0.0 {
            return Err(OverQuota(Duration::from_secs_f64(wait)));
        }
        if self.events.is_some() {
            bucket.events -= 1.0;
        }
        if let Some(rate) = self.bytes {
            bucket.bytes -= (stored_bytes as f64).min(rate.capacity);
        }
        Ok(())
    }

    #[cfg(test)]
    fn n_tracked(&self) -> usize {
        self.state.lock().expect("quota lock").by_sub.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(events_per_sec: u32, bytes_per_sec: u64) -> Quotas {
        Quotas::new(&PublishLimits {
            max_event_stored_bytes: 1000,
            quota_events_per_sec: events_per_sec,
            quota_bytes_per_sec: bytes_per_sec,
        })
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_second_s_worth_passes_then_the_wait_is_what_refills_one_event() {
        let quotas = quotas(4, 0);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(quotas.take_at("a", 10, t0), Ok(()));
        }
        let refused = quotas.take_at("a", 10, t0).unwrap_err();
        assert_eq!(refused, OverQuota(Duration::from_millis(250)));
        assert_eq!(refused.retry_after_secs(), 1, "rounded up, never 0");
        assert_eq!(quotas.take_at("b", 10, t0), Ok(()), "another service");
        assert_eq!(quotas.take_at("a", 10, t0 + 250 * MS), Ok(()));
    }

    #[test]
    fn bytes_buckets_hold_at_least_the_largest_event_and_round_up() {
        // 100 B/s, but one event may store 1000 B: the bucket holds 1000.
        let quotas = quotas(0, 100);
        let t0 = Instant::now();
        assert_eq!(quotas.take_at("a", 1000, t0), Ok(()));
        let refused = quotas.take_at("a", 250, t0 + 1000 * MS).unwrap_err();
        assert_eq!(refused, OverQuota(Duration::from_millis(1500)));
        assert_eq!(refused.retry_after_secs(), 2);
        assert_eq!(quotas.take_at("a", 250, t0 + 2500 * MS), Ok(()));
    }

    #[test]
    fn a_refused_event_takes_nothing_from_either_bucket() {
        let quotas = quotas(2, 1000);
        let t0 = Instant::now();
        assert_eq!(quotas.take_at("a", 900, t0), Ok(()));
        // One event left, but not the bytes: refused, and the event kept.
        assert!(quotas.take_at("a", 900, t0).is_err());
        assert_eq!(quotas.take_at("a", 100, t0), Ok(()));
        assert_eq!(
            quotas.take_at("a", 0, t0),
            Err(OverQuota(Duration::from_millis(500)))
        );
    }

    #[test]
    fn without_limits_nothing_is_tracked() {
        let quotas = quotas(0, 0);
        for i in 0..100 {
            assert_eq!(quotas.take(&format!("s{i}"), u64::MAX), Ok(()));
        }
        assert_eq!(quotas.n_tracked(), 0);
    }

    #[test]
    fn idle_services_are_forgotten() {
        let quotas = quotas(10, 0);
        let t0 = Instant::now() + Duration::from_secs(1);
        for i in 0..1000 {
            quotas.take_at(&format!("s{i}"), 0, t0).unwrap();
        }
        assert_eq!(quotas.n_tracked(), 1000);
        // A second later every one of them is full again: only the new one stays.
        quotas
            .take_at("late", 0, t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(quotas.n_tracked(), 1);
    }
}
