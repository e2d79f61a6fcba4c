//! Node-wide NATS interest: one core subscription per channel that has at
//! least one local socket, shared by all of them, dropped with the last.
//!
//! Each channel's forwarder task is the only writer of the channel's
//! high-water seq (`hw`, the last seq handed to its sockets). It turns each
//! live message into its `event` frame once and queues the same bytes on
//! every member's outbox, and it keeps the channel whole:
//! - a live message whose `Nats-Last-Sequence` (the previous seq on the same
//!   subject) is above `hw` reveals a gap, filled from the stream first;
//! - a reconcile pass (`multi_last` over every channel, after each join, each
//!   NATS reconnect and on a timer) finds a lost *last* message, which no
//!   later message would reveal.
//!
//! A member that resumes from a cursor is `replaying`: the forwarder buffers
//! its live frames while the session replays `(since, hw]` from the stream,
//! and `finish_replay` then queues the buffered frames above `hw`.
//! Nothing here waits on a socket: a full outbox is the socket's problem.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_nats::{
    Subscriber,
    header::{NATS_LAST_SEQUENCE, NATS_SEQUENCE, NATS_TIME_STAMP},
};
use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use herald_shared::{
    channel::Channel,
    frames::encode_event_frame,
    subject::{live_subject, stored_subject},
    trace_context,
};
use tokio::{
    sync::{Notify, OnceCell, mpsc},
    task::AbortHandle,
};

use crate::{
    metrics::{FrameKind, Metrics, parse_time_stamp},
    outbox::Outbox,
    stream_reader::{Range, ReadError, StreamReader},
};

/// Identifies one socket's membership in the hub.
pub(crate) type MemberId = u64;

/// Reconcile requests that arrive close together are served by one pass.
const RECONCILE_DEBOUNCE: Duration = Duration::from_millis(50);
/// How soon a failed reconcile pass is tried again.
const RECONCILE_RETRY: Duration = Duration::from_millis(500);
/// How long subscribing a channel may take (the client waits while it reconnects).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a failed gap repair is retried before the message is delivered anyway.
const REPAIR_ATTEMPTS: u32 = 5;

/// The node's channels and their member sockets.
#[derive(Debug)]
pub(crate) struct Hub {
    nats: async_nats::Client,
    reader: StreamReader,
    channels: Mutex<HashMap<Channel, Arc<Entry>>>,
    next_member: AtomicU64,
    /// Wakes the reconcile task; also notified on every NATS (re)connect.
    reconcile: Arc<Notify>,
    /// Where gap repairs are counted.
    metrics: Arc<Metrics>,
}

/// One channel with local sockets.
#[derive(Debug)]
struct Entry {
    channel: Channel,
    /// `notify.…`: where the channel's history is read from.
    stored_subject: String,
    /// Members change only under the hub's `channels` lock as well, so a
    /// join and the last leave of the same channel cannot interleave.
    state: Mutex<EntryState>,
    forwarder: OnceCell<Forwarder>,
}

#[derive(Debug, Default)]
struct EntryState {
    members: HashMap<MemberId, Member>,
    /// The last seq handed to members (or, for the first member, the
    /// channel's last seq when the subscription started).
    hw: u64,
}

#[derive(Debug)]
struct Member {
    outbox: Outbox,
    /// `Some` while the member replays: live frames wait here.
    replay_buffer: Option<Vec<(u64, Utf8Bytes, FrameKind)>>,
}

/// The running forwarder: asks for catch-ups, and unsubscribes when dropped.
#[derive(Debug)]
struct Forwarder {
    catch_up: mpsc::UnboundedSender<u64>,
    task: AbortHandle,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribing to NATS, or reading where the channel stands, failed.
#[derive(Debug, thiserror::Error)]
#[error("joining {channel} failed: {reason}")]
pub(crate) struct JoinError {
    channel: Channel,
    reason: String,
}

// === impl Hub ===

impl Hub {
    /// `nats` carries the live subscriptions; `reader` reads the stream,
    /// on a connection of its own so a burst of history cannot get the live
    /// one cut off as a slow consumer.
    pub(crate) fn new(
        nats: async_nats::Client,
        reader: StreamReader,
        reconcile: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            reader,
            nats,
            channels: Mutex::default(),
            next_member: AtomicU64::new(1),
            reconcile,
            metrics,
        }
    }

    pub(crate) fn reader(&self) -> &StreamReader {
        &self.reader
    }

    /// A fresh member id for a new socket.
    pub(crate) fn member_id(&self) -> MemberId {
        self.next_member.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds `member` to `channel` and returns the channel's `hw`: live
    /// delivery to this member starts above it. Returns once the server has
    /// the node's subscription, so nothing stored later can be missed.
    ///
    /// With `replaying`, live frames are held until [`Hub::finish_replay`].
    pub(crate) async fn join(
        &self,
        channel: &Channel,
        member: MemberId,
        outbox: &Outbox,
        replaying: bool,
    ) -> Result<u64, JoinError> {
        let entry = {
            let mut channels = self.channels.lock().expect("hub lock");
            let entry = channels
                .entry(channel.clone())
                .or_insert_with(|| Arc::new(Entry::new(channel.clone())));
            let joining = Member {
                outbox: outbox.clone(),
                replay_buffer: replaying.then(Vec::new),
            };
            entry
                .state
                .lock()
                .expect("entry lock")
                .members
                .insert(member, joining);
            entry.clone()
        };
        if let Err(reason) = entry
            .forwarder
            .get_or_try_init(|| self.start_forwarder(&entry))
            .await
        {
            self.leave(channel, member);
            return Err(JoinError {
                channel: channel.clone(),
                reason,
            });
        }
        // Every (re)subscribe is followed by a reconcile pass: in a cluster the
        // subscription reaches the stream leader's server a little later.
        self.reconcile.notify_one();
        Ok(entry.state.lock().expect("entry lock").hw)
    }

    /// Ends `member`'s replay of `channel`: queues the live frames it missed
    /// meanwhile that lie above `replayed_upto`, and delivers live from now on.
    pub(crate) fn finish_replay(&self, channel: &Channel, member: MemberId, replayed_upto: u64) {
        let channels = self.channels.lock().expect("hub lock");
        let Some(entry) = channels.get(channel) else {
            return;
        };
        let mut state = entry.state.lock().expect("entry lock");
        let Some(member) = state.members.get_mut(&member) else {
            return;
        };
        for (seq, frame, kind) in member.replay_buffer.take().unwrap_or_default() {
            if seq > replayed_upto {
                queue(&member.outbox, frame, kind);
            }
        }
    }

    /// The channel's `hw`, if this node holds it.
    pub(crate) fn hw(&self, channel: &Channel) -> Option<u64> {
        self.channels
            .lock()
            .expect("hub lock")
            .get(channel)
            .map(|entry| entry.hw())
    }

    /// Removes `member` from `channel`; the last one out drops the subscription.
    pub(crate) fn leave(&self, channel: &Channel, member: MemberId) {
        let mut channels = self.channels.lock().expect("hub lock");
        let Some(entry) = channels.get(channel) else {
            return;
        };
        let mut state = entry.state.lock().expect("entry lock");
        state.members.remove(&member);
        if state.members.is_empty() {
            drop(state);
            channels.remove(channel);
        }
    }

    /// Runs reconcile passes: on request (debounced) and every `interval`.
    pub(crate) async fn reconcile_forever(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::select! {
                () = self.reconcile.notified() => tokio::time::sleep(RECONCILE_DEBOUNCE).await,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(err) = self.reconcile_once().await {
                // Right after a NATS restart JetStream may not answer yet: try again soon.
                tracing::warn!(error = %err, "Reconcile pass failed; retrying.");
                tokio::time::sleep(RECONCILE_RETRY).await;
                self.reconcile.notify_one();
            }
        }
    }

    /// One `multi_last` over every channel with a running forwarder; a channel
    /// whose last stored seq is above its `hw` gets a catch-up.
    async fn reconcile_once(&self) -> Result<(), ReadError> {
        let entries: Vec<Arc<Entry>> = {
            let channels = self.channels.lock().expect("hub lock");
            channels
                .values()
                .filter(|e| e.forwarder.initialized())
                .cloned()
                .collect()
        };
        if entries.is_empty() {
            return Ok(());
        }
        let subjects: Vec<String> = entries.iter().map(|e| e.stored_subject.clone()).collect();
        let lasts = self.reader.last_seqs(&subjects).await?;
        for entry in entries {
            let Some(&last) = lasts.get(&entry.stored_subject) else {
                continue;
            };
            if last > entry.hw()
                && let Some(forwarder) = entry.forwarder.get()
            {
                let _ = forwarder.catch_up.send(last);
            }
        }
        Ok(())
    }

    async fn start_forwarder(&self, entry: &Arc<Entry>) -> Result<Forwarder, String> {
        // Bounded: a join either starts live delivery or fails (and the client hears so).
        let subscribing = async {
            let subscriber = self
                .nats
                .subscribe(String::from(live_subject(&entry.channel)))
                .await
                .map_err(|e| e.to_string())?;
            // The SUB is written to the server before the last seq is read.
            self.nats.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(subscriber)
        };
        let subscriber = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribing)
            .await
            .map_err(|_| format!("no subscription within {SUBSCRIBE_TIMEOUT:?}"))??;
        // Anything stored from now on reaches us live; start above what is stored already.
        let lasts = self
            .reader
            .last_seqs(std::slice::from_ref(&entry.stored_subject))
            .await
            .map_err(|e| e.to_string())?;
        entry.state.lock().expect("entry lock").hw =
            lasts.get(&entry.stored_subject).copied().unwrap_or(0);

        let (catch_up, requests) = mpsc::unbounded_channel();
        let forwarding = Forwarding {
            entry: Arc::downgrade(entry),
            channel: entry.channel.clone(),
            stored_subject: entry.stored_subject.clone(),
            reader: self.reader.clone(),
            metrics: self.metrics.clone(),
        };
        let task = tokio::spawn(forwarding.run(subscriber, requests));
        Ok(Forwarder {
            catch_up,
            task: task.abort_handle(),
        })
    }
}

// === impl Entry ===

impl Entry {
    fn new(channel: Channel) -> Self {
        Self {
            stored_subject: stored_subject(&channel).into(),
            channel,
            state: Mutex::default(),
            forwarder: OnceCell::new(),
        }
    }

    fn hw(&self) -> u64 {
        self.state.lock().expect("entry lock").hw
    }

    /// Hands one notification to every member, unless it is at or below `hw`;
    /// returns how many members it was handed to.
    /// `stored_at` (its `Nats-Time-Stamp`) travels with the frame to the
    /// socket write, where the delivery latency is measured.
    fn deliver(&self, seq: u64, payload: &[u8], stored_at: Option<SystemTime>) -> usize {
        let Some(frame) = encode_event_frame(&self.channel, seq, payload) else {
            tracing::warn!(channel = %self.channel, seq, "Stored notification is not a JSON object; skipped.");
            return 0;
        };
        let frame = Utf8Bytes::from(frame);
        let mut state = self.state.lock().expect("entry lock");
        if seq <= state.hw {
            return 0;
        }
        state.hw = seq;
        let kind = FrameKind::Live { stored_at };
        for member in state.members.values_mut() {
            match &mut member.replay_buffer {
                Some(buffer) => buffer.push((seq, frame.clone(), kind)),
                None => queue(&member.outbox, frame.clone(), kind),
            }
        }
        state.members.len()
    }
}

/// What a channel's forwarder task owns.
struct Forwarding {
    /// Weak: when the last member leaves, the entry drops and aborts this task.
    entry: Weak<Entry>,
    channel: Channel,
    stored_subject: String,
    reader: StreamReader,
    metrics: Arc<Metrics>,
}

impl Forwarding {
    async fn run(self, mut subscriber: Subscriber, mut catch_ups: mpsc::UnboundedReceiver<u64>) {
        loop {
            tokio::select! {
                // Live copies first: a reconcile pass asks to catch up to the
                // stream's last seq, and copies already queued here would
                // otherwise be read again from the stream (and counted as a
                // repaired gap) under load.
                biased;
                message = subscriber.next() => {
                    let Some(message) = message else { return };
                    let Some(entry) = self.entry.upgrade() else { return };
                    let header = |name| {
                        message.headers.as_ref()?.get_last(name)?.as_str().parse::<u64>().ok()
                    };
                    let Some(seq) = header(NATS_SEQUENCE) else {
                        tracing::warn!(channel = %self.channel, "Live message without Nats-Sequence; skipped.");
                        continue;
                    };
                    // The previous seq stored on this subject: above hw means we missed some.
                    let previous = header(NATS_LAST_SEQUENCE).unwrap_or(0);
                    let hw = entry.hw();
                    if seq <= hw {
                        continue;
                    }
                    if previous > hw {
                        // Boxed: rare, and large next to the loop the task keeps.
                        Box::pin(self.repair(&entry, hw, previous, "live")).await;
                    }
                    let stored_at = message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get_last(NATS_TIME_STAMP))
                        .and_then(|value| parse_time_stamp(value.as_str()));
                    // RePublish keeps the publisher's headers: the delivery
                    // joins the trace of the request that stored the message.
                    let span = tracing::info_span!(
                        parent: None,
                        "deliver",
                        channel = %self.channel,
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
                Some(upto) = catch_ups.recv() => {
                    let Some(entry) = self.entry.upgrade() else { return };
                    let hw = entry.hw();
                    if upto > hw {
                        Box::pin(self.repair(&entry, hw, upto, "reconcile")).await;
                    }
                }
            }
        }
    }

    /// Delivers the channel's stored messages in `(after, upto]`, retrying a
    /// failed read a few times; after that the gap is logged as a loss.
    #[tracing::instrument(name = "repair", parent = None, skip_all, fields(channel = %self.channel, after, upto, found_by))]
    async fn repair(&self, entry: &Entry, after: u64, upto: u64, found_by: &'static str) {
        let mut n_delivered = 0u64;
        let mut attempt = 0;
        let mut range = Range::new(self.stored_subject.clone(), after, upto);
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
                    tracing::error!(channel = %self.channel, after, upto, error = %err, "Gap repair failed; notifications lost.");
                    return;
                }
            }
        }
        self.metrics.gap_repaired(n_delivered);
        tracing::info!(channel = %self.channel, after, upto, n_repaired = n_delivered, found_by, "Gap repaired.");
    }
}

/// Queues a live event frame on a member's outbox; `kind` is what its socket
/// write reports to the metrics (a delivery and its latency).
fn queue(outbox: &Outbox, frame: Utf8Bytes, kind: FrameKind) {
    outbox.push_with(frame, kind);
}
