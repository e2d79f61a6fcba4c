//! One channel's forwarder: the task that holds the channel's NATS
//! subscription and turns each live message into a delivery, in seq order,
//! filling any gap from the stream first.
//!
//! A live message whose `Nats-Last-Sequence` (the previous seq on the same
//! subject) is above the channel's `hw` reveals a gap, repaired before the
//! message is delivered; a reconcile pass asks for a catch-up when the
//! stream's last seq is above `hw`. The task is the only one that delivers,
//! so it alone moves `hw`.

use std::{
    future,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    task::Poll,
    time::Duration,
};

use async_nats::header::{NATS_LAST_SEQUENCE, NATS_SEQUENCE, NATS_TIME_STAMP};
use futures_util::{future::BoxFuture, task::AtomicWaker};
use herald_shared::{channel::Channel, subject::live_subject, trace_context};
use tokio::task::AbortHandle;

use super::{
    channel::Entry,
    gap::{Gap, Live},
};
use crate::{
    frame::parse_time_stamp,
    live::{LiveClient, Message, Received, SubscribeError, Subscription},
    metrics::Metrics,
    stream_reader::{Range, ReadError, StreamReader},
};

/// How long subscribing a channel may take (the client waits while it reconnects).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a failed gap repair is retried before the message is delivered anyway.
const REPAIR_ATTEMPTS: u32 = 5;

/// Subscribing a channel, or reading where it stands, failed.
///
/// Each message repeats its cause's: log lines (JSON ones too) print only
/// the top error, and the cause is what an operator needs. The cause is
/// also the `source`, for code that walks the chain.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JoinError {
    #[error("joining {channel} failed: subscribing: {source}")]
    Subscribe {
        channel: Channel,
        #[source]
        source: SubscribeError,
    },
    #[error("joining {channel} failed: no subscription within {SUBSCRIBE_TIMEOUT:?}")]
    TimedOut { channel: Channel },
    #[error("joining {channel} failed: reading its last seq: {source}")]
    LastSeq {
        channel: Channel,
        #[source]
        source: ReadError,
    },
}

/// The running forwarder: asks for catch-ups, and unsubscribes when dropped.
#[derive(Debug)]
pub(super) struct Forwarder {
    catch_up: Arc<CatchUp>,
    task: AbortHandle,
}

/// The highest catch-up asked of a forwarder and not yet taken: requests
/// that arrive before the task gets to them merge (catching up to the
/// highest covers the lower ones). An atomic and a waker rather than a
/// channel: a tokio channel allocates about 1 KiB up front, per channel of
/// every idle socket, for a request that comes rarely.
#[derive(Debug, Default)]
struct CatchUp {
    /// 0: none asked (a catch-up to 0 would have nothing to deliver).
    upto: AtomicU64,
    task: AtomicWaker,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Forwarder ===

impl Forwarder {
    /// Subscribes to the channel's live copies, sets the entry's `hw` to the
    /// channel's last stored seq, and spawns the task. Returns once the
    /// server has the subscription, so nothing stored later can be missed.
    pub(super) async fn start(
        live: &LiveClient,
        reader: &StreamReader,
        metrics: &Arc<Metrics>,
        entry: &Arc<Entry>,
    ) -> Result<Self, JoinError> {
        let channel = || entry.channel.clone();
        // Bounded: a join either starts live delivery or fails (and the client hears so).
        // Returns once the server has the SUB, before the last seq is read.
        let subscribing = async {
            live.subscribe(live_subject(&entry.channel).as_str())
                .await
                .map_err(|source| JoinError::Subscribe {
                    channel: channel(),
                    source,
                })
        };
        let subscriber = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribing)
            .await
            .map_err(|_| JoinError::TimedOut { channel: channel() })??;
        // Anything stored from now on reaches us live; start above what is stored already.
        // Read with the other channels joining meanwhile (a reconnect storm).
        let last = reader
            .last_seq_of(&entry.stored_subject)
            .await
            .map_err(|source| JoinError::LastSeq {
                channel: channel(),
                source,
            })?;
        entry.start_at(last.unwrap_or(0));

        let catch_up = Arc::new(CatchUp::default());
        let forwarding = Forwarding {
            entry: Arc::downgrade(entry),
            reader: reader.clone(),
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(forwarding.run(subscriber, catch_up.clone()));
        Ok(Self {
            catch_up,
            task: task.abort_handle(),
        })
    }

    /// Asks the task to deliver what is stored up to `upto` (if above `hw`).
    pub(super) fn catch_up(&self, upto: u64) {
        self.catch_up.upto.fetch_max(upto, Ordering::AcqRel);
        self.catch_up.task.wake();
    }
}

// === impl CatchUp ===

impl CatchUp {
    /// The next catch-up asked for, once there is one.
    async fn next(&self) -> u64 {
        future::poll_fn(|cx| {
            let upto = self.upto.swap(0, Ordering::AcqRel);
            if upto != 0 {
                return Poll::Ready(upto);
            }
            self.task.register(cx.waker());
            // One asked between the swap and the registration woke nobody.
            match self.upto.swap(0, Ordering::AcqRel) {
                0 => Poll::Pending,
                upto => Poll::Ready(upto),
            }
        })
        .await
    }
}

/// What a channel's forwarder task owns.
struct Forwarding {
    /// Weak: the task keeps no channel alive; the hub aborts it when the
    /// channel's last member leaves.
    /// The channel and its stored subject are read from it (copies here
    /// would cost two allocations per channel).
    entry: Weak<Entry>,
    reader: StreamReader,
    metrics: Arc<Metrics>,
}

// === impl Forwarding ===

impl Forwarding {
    async fn run(self, mut subscription: Subscription, catch_up: Arc<CatchUp>) {
        let this = &self;
        loop {
            // The branches only decide; the rare repair is awaited after the
            // `select!`, boxed, so no message is kept across an await in the
            // state an idle channel's task holds.
            let repair = tokio::select! {
                // Live copies first: a reconcile pass asks to catch up to the
                // stream's last seq, and copies already queued here would
                // otherwise be read again from the stream (and counted as a
                // repaired gap) under load.
                biased;
                received = subscription.next() => {
                    let Some(received) = received else { return };
                    let Some(entry) = self.entry.upgrade() else { return };
                    match received {
                        Received::Message(message) => self.live(entry, message),
                        // Its queue overflowed: what it dropped is in the stream.
                        Received::Dropped { upto } => Gap::upto_last(entry.hw(), upto).map(|gap| -> BoxFuture<'_, ()> {
                            Box::pin(async move { this.repair(&entry, gap, "overflow").await })
                        }),
                    }
                }
                upto = catch_up.next() => {
                    let Some(entry) = self.entry.upgrade() else { return };
                    Gap::upto_last(entry.hw(), upto).map(|gap| -> BoxFuture<'_, ()> {
                        Box::pin(async move { this.repair(&entry, gap, "reconcile").await })
                    })
                }
            };
            if let Some(repair) = repair {
                repair.await;
            }
        }
    }

    /// Delivers a live message now, unless a gap before it must be repaired
    /// first: then returns the repair and the delivery, boxed with the
    /// message.
    fn live(&self, entry: Arc<Entry>, message: Message) -> Option<BoxFuture<'_, ()>> {
        let header = |name| {
            message
                .headers
                .as_ref()?
                .get_last(name)?
                .as_str()
                .parse::<u64>()
                .ok()
        };
        let Some(seq) = header(NATS_SEQUENCE) else {
            tracing::warn!(channel = %entry.channel, "Live message without Nats-Sequence; skipped.");
            return None;
        };
        // Stored: no read may answer from a replica behind it.
        self.reader.saw(seq, &entry.stored_subject);
        // The previous seq stored on this subject: above hw means we missed some.
        let previous = header(NATS_LAST_SEQUENCE).unwrap_or(0);
        match Live::classify(entry.hw(), seq, previous) {
            Live::Stale => None,
            Live::Next => {
                deliver(&entry, &message, seq);
                None
            }
            Live::AfterGap(gap) => Some(Box::pin(async move {
                self.repair(&entry, gap, "live").await;
                deliver(&entry, &message, seq);
            })),
        }
    }

    /// Delivers the channel's stored messages in `(after, upto]`, retrying a
    /// failed read a few times; after that the gap is logged as a loss.
    #[tracing::instrument(name = "repair", parent = None, skip_all, fields(channel = %entry.channel, after = gap.after, upto = gap.upto, found_by))]
    async fn repair(&self, entry: &Entry, gap: Gap, found_by: &'static str) {
        let Gap { after, upto } = gap;
        let mut n_delivered = 0u64;
        let mut attempt = 0;
        let mut range = Range::new(entry.stored_subject.clone(), after, upto);
        loop {
            match range.next_page(&self.reader).await {
                Ok(Some(page)) => {
                    for message in page {
                        entry.deliver(message.seq, &message.payload, message.stored_at);
                        n_delivered += 1;
                    }
                }
                Ok(None) => break,
                Err(err) if attempt + 1 < REPAIR_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(error = %err, attempt, "Gap repair read failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                Err(err) => {
                    tracing::error!(channel = %entry.channel, after, upto, error = %err, "Gap repair failed; notifications lost.");
                    return;
                }
            }
        }
        self.metrics.gap_repaired(n_delivered);
        tracing::info!(channel = %entry.channel, after, upto, n_repaired = n_delivered, found_by, "Gap repaired.");
    }
}

/// Hands a live message to the channel's members, in a span that joins
/// the trace of the request that stored it (RePublish keeps the
/// publisher's headers); its `Nats-Time-Stamp` starts its delivery latency.
fn deliver(entry: &Entry, message: &Message, seq: u64) {
    let stored_at = message
        .headers
        .as_ref()
        .and_then(|headers| headers.get_last(NATS_TIME_STAMP))
        .and_then(|value| parse_time_stamp(value.as_str()));
    let span = tracing::info_span!(
        parent: None,
        "deliver",
        channel = %entry.channel,
        seq,
        n_members = tracing::field::Empty,
    );
    if let Some(headers) = &message.headers {
        trace_context::set_parent(&span, headers);
    }
    span.in_scope(|| {
        let n_members = entry.deliver(seq, &message.payload, stored_at);
        span.record("n_members", n_members);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what a function's returned future holds, without calling it.
    fn output_size<A, B, C, R>(_: fn(A, B, C) -> R) -> usize {
        size_of::<R>()
    }

    /// Every channel with local sockets keeps its forwarder's task: what the
    /// loop holds across its wait is paid per channel (in the idle benchmark,
    /// per socket). It was 1.3 KB with a live message held across the
    /// repair's await and copies of the reader, channel and subject; 176
    /// bytes (unoptimized) without.
    #[test]
    fn an_idle_forwarder_s_future_stays_small() {
        let size = output_size(Forwarding::run);
        assert!(size <= 256, "the forwarder's future holds {size} bytes");
    }
}
