//! Node-wide NATS interest: the registry of channels that have at least one
//! local socket (one core subscription each, shared by all of them, dropped
//! with the last), and the reconcile passes over all of them.
//!
//! Per channel, [`channel`] holds the members and the high-water seq (`hw`,
//! the last seq handed to its sockets) and fans each notification out once;
//! [`forwarder`] is the task that feeds it from NATS and repairs gaps. A
//! reconcile pass (`multi_last` over every channel, after each join, each
//! NATS reconnect and on a timer) finds a lost *last* message, which no
//! later message would reveal, and asks that channel's forwarder to catch up.
//!
//! A member that resumes from a cursor is `replaying`: its live frames are
//! held ([`recovery`]) while the session replays `(since, hw]` from the
//! stream, and `finish_replay` then queues the held frames above what was
//! replayed.
//!
//! Nothing here waits on a socket: a full outbox is the socket's problem.

mod channel;
mod forwarder;
mod gap;
mod recovery;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use herald_shared::channel::Channel;
use tokio::sync::{Notify, OnceCell};

use self::{channel::Entry, forwarder::Forwarder, gap::Gap};
pub(crate) use self::{channel::MemberId, forwarder::JoinError};
use crate::{
    live::LiveClient,
    metrics::Metrics,
    outbox::Outbox,
    stream_reader::{ReadError, StreamReader},
};

/// Reconcile requests that arrive close together are served by one pass.
const RECONCILE_DEBOUNCE: Duration = Duration::from_millis(50);
/// How soon a failed reconcile pass is tried again.
const RECONCILE_RETRY: Duration = Duration::from_millis(500);

/// The node's channels and their member sockets.
#[derive(Debug)]
pub(crate) struct Hub {
    live: LiveClient,
    reader: StreamReader,
    channels: Mutex<HashMap<Channel, Arc<Slot>>>,
    next_member: AtomicU64,
    /// Wakes the reconcile task; also notified on every NATS (re)connect.
    reconcile: Arc<Notify>,
    /// Where gap repairs are counted.
    metrics: Arc<Metrics>,
}

/// One registered channel: its state, and its forwarder once subscribed.
/// Removing the slot drops the forwarder, which unsubscribes.
#[derive(Debug)]
struct Slot {
    entry: Arc<Entry>,
    forwarder: OnceCell<Forwarder>,
}

// === impl Hub ===

impl Hub {
    /// `live` carries the live subscriptions; `reader` reads the stream,
    /// on a connection of its own so a burst of history cannot get the live
    /// one cut off as a slow consumer.
    pub(crate) fn new(
        live: LiveClient,
        reader: StreamReader,
        reconcile: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            reader,
            live,
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
        let slot = {
            let mut channels = self.channels.lock().expect("hub lock");
            let slot = channels.entry(channel.clone()).or_insert_with(|| {
                Arc::new(Slot {
                    entry: Arc::new(Entry::new(channel.clone())),
                    forwarder: OnceCell::new(),
                })
            });
            slot.entry.add(member, outbox, replaying);
            slot.clone()
        };
        let starting = Forwarder::start(&self.live, &self.reader, &self.metrics, &slot.entry);
        if let Err(err) = slot.forwarder.get_or_try_init(|| starting).await {
            self.leave(channel, member);
            return Err(err);
        }
        // Every (re)subscribe is followed by a reconcile pass: in a cluster the
        // subscription reaches the stream leader's server a little later.
        self.reconcile.notify_one();
        Ok(slot.entry.hw())
    }

    /// Ends `member`'s replay of `channel`: queues the live frames it missed
    /// meanwhile that lie above `replayed_upto`, and delivers live from now on.
    pub(crate) fn finish_replay(&self, channel: &Channel, member: MemberId, replayed_upto: u64) {
        let channels = self.channels.lock().expect("hub lock");
        if let Some(slot) = channels.get(channel) {
            slot.entry.finish_replay(member, replayed_upto);
        }
    }

    /// The channel's `hw`, if this node holds it.
    pub(crate) fn hw(&self, channel: &Channel) -> Option<u64> {
        self.channels
            .lock()
            .expect("hub lock")
            .get(channel)
            .map(|slot| slot.entry.hw())
    }

    /// Removes `member` from `channel`; the last one out drops the subscription.
    pub(crate) fn leave(&self, channel: &Channel, member: MemberId) {
        let mut channels = self.channels.lock().expect("hub lock");
        let Some(slot) = channels.get(channel) else {
            return;
        };
        if slot.entry.remove(member) {
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
        let slots: Vec<Arc<Slot>> = {
            let channels = self.channels.lock().expect("hub lock");
            channels
                .values()
                .filter(|slot| slot.forwarder.initialized())
                .cloned()
                .collect()
        };
        if slots.is_empty() {
            return Ok(());
        }
        let subjects: Vec<String> = slots
            .iter()
            .map(|slot| slot.entry.stored_subject.clone())
            .collect();
        let lasts = self.reader.last_seqs(&subjects).await?;
        for slot in slots {
            let Some(&last) = lasts.get(&slot.entry.stored_subject) else {
                continue;
            };
            if Gap::upto_last(slot.entry.hw(), last).is_some()
                && let Some(forwarder) = slot.forwarder.get()
            {
                forwarder.catch_up(last);
            }
        }
        Ok(())
    }
}
