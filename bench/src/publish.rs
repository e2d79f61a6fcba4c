//! Publishing over HTTP as a domain service would: `POST /v1/events` with a bearer service
//! token over a pool of keep-alive connections, either at a fixed offered rate (`paced`) or as
//! fast as a number of clients can (`closed_loop`, or `closed_loop_batches` over
//! `POST /v1/events/batch`). Every event's `id` carries its publish
//! instant (see `clock`), taken just before its request is sent.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::{
    sync::Semaphore,
    time::{MissedTickBehavior, interval},
};

use crate::{clock, recorder::new_histogram};

/// The `data` of every event: a valid `calendar.event.updated`, about 100 bytes.
const DATA: &str = r#"{"calendar_id":"c1","event_id":"e1","title":"Standup","starts_at":"2026-11-27T09:00:00Z","ends_at":"2026-11-27T09:15:00Z","changes":["title"]}"#;
/// How often the paced publisher looks at its schedule.
const PACE_TICK: Duration = Duration::from_millis(1);

/// Who event number `k` goes to: an `audience` object as JSON.
pub(crate) type AudienceFn = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// A client of one publisher.
#[derive(Debug)]
pub(crate) struct HttpPublisher {
    client: reqwest::Client,
    url: String,
    authorization: String,
    counter: AtomicU64,
}

/// What a publishing run did.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) accepted: u64,
    /// Non-202 answers and transport errors, by status or kind.
    pub(crate) errors: BTreeMap<String, u64>,
    /// The first error answer's body, for the report.
    pub(crate) first_error: Option<String>,
    /// Request round trips of accepted events, in microseconds.
    pub(crate) http_latency_us: Histogram<u64>,
    pub(crate) started: Instant,
    pub(crate) finished: Instant,
}

/// `{"users":["u<k mod n_users>"]}`: one user per event, round-robin.
pub(crate) fn to_one_user(n_users: u64) -> AudienceFn {
    Arc::new(move |k| format!(r#"{{"users":["u{}"]}}"#, k % n_users.max(1)))
}

/// `{"namespaces":["<ns>"]}`: every event to one namespace.
pub(crate) fn to_namespace(ns: &'static str) -> AudienceFn {
    Arc::new(move |_| format!(r#"{{"namespaces":["{ns}"]}}"#))
}

/// A `calendar.event.updated` envelope with this id and audience.
pub(crate) fn envelope(id: &str, audience: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"calendar.event.updated","source":"herald-bench","time":"2026-11-26T10:00:00Z","audience":{audience},"data":{DATA}}}"#
    )
}

impl HttpPublisher {
    /// Keeps up to `connections` idle keep-alive connections to `publisher_url`.
    pub(crate) fn new(
        publisher_url: &str,
        token: &str,
        connections: usize,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            url: format!("{publisher_url}/v1/events"),
            authorization: format!("Bearer {token}"),
            counter: AtomicU64::new(0),
        })
    }

    /// Posts event number `k` and records the outcome in `tally`.
    async fn post(&self, audience: &str, tally: &Mutex<Tally>) {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let sent_ns = clock::now_ns();
        let body = envelope(&clock::event_id(sent_ns, counter), audience);
        let response = self
            .client
            .post(&self.url)
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        // Read the body in every case, so the connection goes back to the pool.
        let outcome = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                if status == 202 {
                    Ok(())
                } else {
                    Err((status.to_string(), body))
                }
            }
            Err(err) => Err(("transport".to_owned(), err.to_string())),
        };
        let elapsed_us = clock::now_ns().saturating_sub(sent_ns) / 1000;
        let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(()) => {
                tally.accepted += 1;
                tally.http_latency_us.saturating_record(elapsed_us.max(1));
            }
            Err((kind, body)) => tally.error(kind, &body),
        }
    }

    /// Posts events `k0 .. k0 + n` in one `POST /v1/events/batch` and records each event's
    /// outcome in `tally` (a refused batch: every event under its status); the round trip is
    /// recorded once, when some event was accepted.
    async fn post_batch(&self, k0: u64, n: u64, audience: &AudienceFn, tally: &Mutex<Tally>) {
        let sent_ns = clock::now_ns();
        let events: Vec<String> = (k0..k0 + n)
            .map(|k| {
                let counter = self.counter.fetch_add(1, Ordering::Relaxed);
                envelope(&clock::event_id(sent_ns, counter), &audience(k))
            })
            .collect();
        let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
        let response = self
            .client
            .post(format!("{}/batch", self.url))
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        // Per event: `Ok` or (kind, body); read the body in every case, so the connection goes
        // back to the pool.
        let outcomes: Vec<Result<(), (String, String)>> = match response {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                match serde_json::from_str::<BatchAnswer>(&body) {
                    Ok(answer) if status == 200 => answer
                        .results
                        .into_iter()
                        .map(
                            |result| match result.get("status").and_then(|s| s.as_u64()) {
                                Some(202) => Ok(()),
                                other => Err((
                                    other.map_or("no status".into(), |s| s.to_string()),
                                    result.to_string(),
                                )),
                            },
                        )
                        .collect(),
                    _ => vec![Err((status.to_string(), body)); n as usize],
                }
            }
            Err(err) => vec![Err(("transport".to_owned(), err.to_string())); n as usize],
        };
        let elapsed_us = clock::now_ns().saturating_sub(sent_ns) / 1000;
        let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
        let mut any_accepted = false;
        for outcome in outcomes {
            match outcome {
                Ok(()) => {
                    tally.accepted += 1;
                    any_accepted = true;
                }
                Err((kind, body)) => tally.error(kind, &body),
            }
        }
        if any_accepted {
            tally.http_latency_us.saturating_record(elapsed_us.max(1));
        }
    }
}

/// The `200` body of `POST /v1/events/batch`, read only as far as each result's `status`.
#[derive(Debug, serde::Deserialize)]
struct BatchAnswer {
    results: Vec<serde_json::Value>,
}

/// Offers `rate` events per second for `duration`, on a schedule computed from the start time
/// (a late tick sends what is due, so the offered rate holds), with at most `max_in_flight`
/// requests outstanding. Returns once every request has been answered.
pub(crate) async fn paced(
    publisher: Arc<HttpPublisher>,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    audience: AudienceFn,
) -> Tally {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let tally = Arc::new(Mutex::new(Tally::new()));
    let gate = Arc::new(Semaphore::new(max_in_flight));
    let start = Instant::now();
    let mut tick = interval(PACE_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate).floor() as u64 + 1).min(total);
        while sent < due {
            let Ok(permit) = gate.clone().acquire_owned().await else {
                break;
            };
            let (publisher, tally, audience) = (publisher.clone(), tally.clone(), audience.clone());
            tokio::spawn(async move {
                publisher.post(&audience(sent), &tally).await;
                drop(permit);
            });
            sent += 1;
        }
    }
    finish(tally, gate, max_in_flight, sent).await
}

/// `clients` loops, each posting its next event as soon as the last is answered, for
/// `duration`.
pub(crate) async fn closed_loop(
    publisher: Arc<HttpPublisher>,
    clients: usize,
    duration: Duration,
    audience: AudienceFn,
) -> Tally {
    closed_loops(&[publisher], clients, None, duration, audience).await
}

/// `clients` loops, each posting its next batch of `batch_size` events as soon as the last is
/// answered, for `duration`; loop `i` posts through `publishers[i % publishers.len()]`.
pub(crate) async fn closed_loop_batches(
    publishers: &[Arc<HttpPublisher>],
    clients: usize,
    batch_size: u64,
    duration: Duration,
    audience: AudienceFn,
) -> Tally {
    closed_loops(publishers, clients, Some(batch_size), duration, audience).await
}

/// `clients` loops until `duration` is over, loop `i` posting through
/// `publishers[i % publishers.len()]` one event at a time (`batch` `None`) or
/// batches of `batch` events, the next as soon as the last is answered.
async fn closed_loops(
    publishers: &[Arc<HttpPublisher>],
    clients: usize,
    batch: Option<u64>,
    duration: Duration,
    audience: AudienceFn,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let loops: Vec<_> = (0..clients)
        .map(|i| {
            let (publisher, tally, audience, sent) = (
                publishers[i % publishers.len()].clone(),
                tally.clone(),
                audience.clone(),
                sent.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    match batch {
                        None => {
                            let k = sent.fetch_add(1, Ordering::Relaxed);
                            publisher.post(&audience(k), &tally).await;
                        }
                        Some(n) => {
                            let k0 = sent.fetch_add(n, Ordering::Relaxed);
                            publisher.post_batch(k0, n, &audience, &tally).await;
                        }
                    }
                }
            })
        })
        .collect();
    for handle in loops {
        let _ = handle.await;
    }
    close(&tally, sent.load(Ordering::Relaxed))
}

/// Waits for the requests still in flight, then closes the tally.
async fn finish(
    tally: Arc<Mutex<Tally>>,
    gate: Arc<Semaphore>,
    max_in_flight: usize,
    sent: u64,
) -> Tally {
    let permits = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _all = gate.acquire_many(permits).await;
    close(&tally, sent)
}

/// The tally of a finished run of `sent` events, its end now.
fn close(tally: &Mutex<Tally>, sent: u64) -> Tally {
    let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner).clone();
    tally.sent = sent;
    tally.finished = Instant::now();
    tally
}

impl Tally {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            sent: 0,
            accepted: 0,
            errors: BTreeMap::new(),
            first_error: None,
            http_latency_us: new_histogram(),
            started: now,
            finished: now,
        }
    }

    /// One event refused (or lost in transport) with `kind`; the first one's body is kept.
    fn error(&mut self, kind: String, body: &str) {
        if self.first_error.is_none() {
            self.first_error = Some(format!(
                "{kind}: {}",
                body.chars().take(300).collect::<String>()
            ));
        }
        *self.errors.entry(kind).or_default() += 1;
    }

    pub(crate) fn n_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    pub(crate) fn seconds(&self) -> f64 {
        self.finished.duration_since(self.started).as_secs_f64()
    }
}
