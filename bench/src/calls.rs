//! The tally of `rpc` calls made in one window: per method, how many were sent, answered `ok`,
//! answered with an error (by code) or never answered (`missing`), and the latency from
//! sending the `rpc` frame to receiving its `rpc_result`; plus answers to no pending call
//! (`unexpected`: a duplicate, or one after the window gave up on it) and the notifications
//! the successful writes caused on the caller's own socket.
//!
//! Every sent call ends in exactly one of `ok`, `errors` or `missing`, so `sent = ok + errors +
//! missing` holds by construction; `unexpected` and `duplicated` notifications are what
//! "answered exactly once" and "delivered once" would break.

use std::{collections::BTreeMap, time::Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::recorder::{Latency, new_histogram};

/// The methods the scenario calls: the read path, and the write path (which publishes a domain
/// event through JetStream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    List,
    Create,
    Delete,
}

impl Method {
    pub(crate) const ALL: [Method; 3] = [Method::List, Method::Create, Method::Delete];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Method::List => "calendar.event.list",
            Method::Create => "calendar.event.create",
            Method::Delete => "calendar.event.delete",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether a successful call publishes a domain event (and so a notification).
    pub(crate) fn writes(self) -> bool {
        !matches!(self, Method::List)
    }
}

/// One method's calls.
#[derive(Debug, Clone)]
pub(crate) struct MethodTally {
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    /// Error answers by code (the service's or the edge's).
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) missing: u64,
    /// Every answer's latency (ok or error), in microseconds.
    pub(crate) latency_us: Histogram<u64>,
}

/// One window's calls, on one socket or merged over all of them.
#[derive(Debug, Clone)]
pub(crate) struct CallTally {
    methods: [MethodTally; 3],
    /// `rpc_result` frames whose `ref` was not pending.
    pub(crate) unexpected: u64,
    /// Event frames on the user channel, new to the socket.
    pub(crate) notifications: u64,
    /// Event frames whose seq was not above the last one seen.
    pub(crate) duplicated_notifications: u64,
    /// When the window began (the earliest, merged).
    pub(crate) started: Instant,
    /// The last answer (the latest, merged).
    pub(crate) last_answer: Option<Instant>,
}

impl MethodTally {
    fn new() -> Self {
        Self {
            sent: 0,
            ok: 0,
            errors: BTreeMap::new(),
            missing: 0,
            latency_us: new_histogram(),
        }
    }

    fn n_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    fn merge(&mut self, other: &MethodTally) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        self.missing += other.missing;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
    }

    fn summary(&self) -> Value {
        json!({
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.n_errors(),
            "error_codes": self.errors,
            "missing": self.missing,
            "latency_ms": Latency::of(&self.latency_us),
        })
    }
}

impl CallTally {
    pub(crate) fn new(started: Instant) -> Self {
        Self {
            methods: [MethodTally::new(), MethodTally::new(), MethodTally::new()],
            unexpected: 0,
            notifications: 0,
            duplicated_notifications: 0,
            started,
            last_answer: None,
        }
    }

    pub(crate) fn sent(&mut self, method: Method) {
        self.methods[method.index()].sent += 1;
    }

    /// An answer `took_us` after its call; `error` is its code, if it failed.
    pub(crate) fn answered(&mut self, method: Method, error: Option<&str>, took_us: u64) {
        let tally = &mut self.methods[method.index()];
        match error {
            None => tally.ok += 1,
            Some(code) => *tally.errors.entry(code.to_owned()).or_default() += 1,
        }
        tally.latency_us.saturating_record(took_us.max(1));
        self.last_answer = Some(Instant::now());
    }

    pub(crate) fn missing(&mut self, method: Method) {
        self.methods[method.index()].missing += 1;
    }

    pub(crate) fn method(&self, method: Method) -> &MethodTally {
        &self.methods[method.index()]
    }

    pub(crate) fn merge(&mut self, other: &CallTally) {
        for (mine, theirs) in self.methods.iter_mut().zip(&other.methods) {
            mine.merge(theirs);
        }
        self.unexpected += other.unexpected;
        self.notifications += other.notifications;
        self.duplicated_notifications += other.duplicated_notifications;
        self.started = self.started.min(other.started);
        self.last_answer = self.last_answer.max(other.last_answer);
    }

    fn total(&self, f: impl Fn(&MethodTally) -> u64) -> u64 {
        self.methods.iter().map(f).sum()
    }

    pub(crate) fn n_sent(&self) -> u64 {
        self.total(|m| m.sent)
    }

    pub(crate) fn n_ok(&self) -> u64 {
        self.total(|m| m.ok)
    }

    pub(crate) fn n_errors(&self) -> u64 {
        self.total(MethodTally::n_errors)
    }

    pub(crate) fn n_missing(&self) -> u64 {
        self.total(|m| m.missing)
    }

    pub(crate) fn n_answered(&self) -> u64 {
        self.n_ok() + self.n_errors()
    }

    /// Successful writes: each published one domain event, so one notification is due.
    pub(crate) fn writes_ok(&self) -> u64 {
        Method::ALL
            .iter()
            .filter(|m| m.writes())
            .map(|m| self.method(*m).ok)
            .sum()
    }

    /// Every answer's latency, all methods.
    pub(crate) fn latency_us(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for method in &self.methods {
            let _ = all.add(&method.latency_us);
        }
        all
    }

    /// From the window's start to its last answer, in seconds.
    pub(crate) fn seconds(&self) -> f64 {
        self.last_answer
            .map_or(0.0, |last| last.duration_since(self.started).as_secs_f64())
    }

    /// Answers per second over [`seconds`](Self::seconds).
    pub(crate) fn calls_per_sec(&self) -> f64 {
        let seconds = self.seconds();
        if seconds > 0.0 {
            self.n_answered() as f64 / seconds
        } else {
            0.0
        }
    }

    /// Per method, by wire name.
    pub(crate) fn by_method(&self) -> Value {
        Method::ALL
            .iter()
            .map(|m| (m.name().to_owned(), self.method(*m).summary()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sent_call_lands_in_one_outcome_and_merges_add_up() {
        let start = Instant::now();
        let mut a = CallTally::new(start);
        for method in [Method::List, Method::Create, Method::Delete, Method::Create] {
            a.sent(method);
        }
        a.answered(Method::List, None, 900);
        a.answered(Method::Create, Some("SLOT_TAKEN"), 1500);
        a.answered(Method::Create, None, 2000);
        a.missing(Method::Delete);
        let mut b = CallTally::new(start);
        b.sent(Method::Delete);
        b.answered(Method::Delete, None, 100);
        b.notifications = 2;
        a.merge(&b);
        assert_eq!(a.n_sent(), 5);
        assert_eq!(a.n_ok() + a.n_errors() + a.n_missing(), a.n_sent());
        assert_eq!((a.n_ok(), a.n_errors(), a.n_missing()), (3, 1, 1));
        assert_eq!(a.writes_ok(), 2);
        assert_eq!(a.method(Method::Create).errors["SLOT_TAKEN"], 1);
        assert_eq!(a.latency_us().len(), 4);
        assert_eq!(a.notifications, 2);
    }
}
