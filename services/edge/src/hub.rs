//! Node-wide NATS interest: one core subscription per channel that has at
//! least one local socket, shared by all of them, dropped with the last.
//!
//! Each live message is turned into its `event` frame once and the same
//! bytes are queued on every member socket's outbox. Nothing here waits on
//! a socket: a full outbox is the socket's problem (it is cut off).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use async_nats::{Subscriber, header::NATS_SEQUENCE};
use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt;
use herald_shared::{channel::Channel, frames::encode_event_frame, subject::live_subject};
use tokio::{sync::OnceCell, task::AbortHandle};

use crate::outbox::Outbox;

/// Identifies one socket's membership in the hub.
pub(crate) type MemberId = u64;

/// The node's channels and their member sockets.
#[derive(Debug)]
pub(crate) struct Hub {
    nats: async_nats::Client,
    channels: Mutex<HashMap<Channel, Arc<Entry>>>,
    next_member: AtomicU64,
}

/// One channel with local sockets.
#[derive(Debug)]
struct Entry {
    channel: Channel,
    /// Changed only under the hub's `channels` lock, so a join and the last
    /// leave of the same channel cannot interleave.
    members: Mutex<HashMap<MemberId, Outbox>>,
    /// The task that reads the channel's subscription; set once the server
    /// has the subscription, aborted (unsubscribing) when the entry drops.
    forwarder: OnceCell<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Subscribing to NATS failed.
#[derive(Debug, thiserror::Error)]
#[error("subscribing to {channel} failed: {source}")]
pub(crate) struct JoinError {
    channel: Channel,
    source: async_nats::Error,
}

// === impl Hub ===

impl Hub {
    pub(crate) fn new(nats: async_nats::Client) -> Self {
        Self {
            nats,
            channels: Mutex::default(),
            next_member: AtomicU64::new(1),
        }
    }

    /// A fresh member id for a new socket.
    pub(crate) fn member_id(&self) -> MemberId {
        self.next_member.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds `member` to `channel`; returns once the node's NATS subscription
    /// for the channel is known to the server, so nothing stored after this
    /// returns can be missed live.
    pub(crate) async fn join(
        &self,
        channel: &Channel,
        member: MemberId,
        outbox: &Outbox,
    ) -> Result<(), JoinError> {
        let entry = {
            let mut channels = self.channels.lock().expect("hub lock");
            let entry = channels
                .entry(channel.clone())
                .or_insert_with(|| Arc::new(Entry::new(channel.clone())));
            entry
                .members
                .lock()
                .expect("members lock")
                .insert(member, outbox.clone());
            entry.clone()
        };
        let started = entry
            .forwarder
            .get_or_try_init(|| self.start_forwarder(&entry))
            .await;
        if let Err(source) = started {
            self.leave(channel, member);
            return Err(JoinError {
                channel: channel.clone(),
                source,
            });
        }
        Ok(())
    }

    /// Removes `member` from `channel`; the last one out drops the subscription.
    pub(crate) fn leave(&self, channel: &Channel, member: MemberId) {
        let mut channels = self.channels.lock().expect("hub lock");
        let Some(entry) = channels.get(channel) else {
            return;
        };
        let mut members = entry.members.lock().expect("members lock");
        members.remove(&member);
        if members.is_empty() {
            drop(members);
            channels.remove(channel);
        }
    }

    async fn start_forwarder(&self, entry: &Arc<Entry>) -> Result<AbortOnDrop, async_nats::Error> {
        let subscriber = self
            .nats
            .subscribe(String::from(live_subject(&entry.channel)))
            .await?;
        // A PING/PONG round trip: the server has processed our SUB.
        self.nats.flush().await?;
        let task = tokio::spawn(forward(subscriber, Arc::downgrade(entry)));
        Ok(AbortOnDrop(task.abort_handle()))
    }
}

// === impl Entry ===

impl Entry {
    fn new(channel: Channel) -> Self {
        Self {
            channel,
            members: Mutex::default(),
            forwarder: OnceCell::new(),
        }
    }
}

/// Reads a channel's live messages and fans each out as one shared frame.
///
/// Holds the entry weakly: when the last member leaves, the entry drops,
/// this task is aborted, and dropping the subscriber unsubscribes.
async fn forward(mut subscriber: Subscriber, entry: Weak<Entry>) {
    while let Some(message) = subscriber.next().await {
        let Some(entry) = entry.upgrade() else { return };
        let seq = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get_last(NATS_SEQUENCE))
            .and_then(|value| value.as_str().parse::<u64>().ok());
        let Some(seq) = seq else {
            tracing::warn!(subject = %message.subject, "Live message without Nats-Sequence; dropped.");
            continue;
        };
        let Some(frame) = encode_event_frame(&entry.channel, seq, &message.payload) else {
            tracing::warn!(subject = %message.subject, seq, "Stored notification is not a JSON object; dropped.");
            continue;
        };
        let frame = Utf8Bytes::from(frame);
        for outbox in entry.members.lock().expect("members lock").values() {
            outbox.push(frame.clone());
        }
    }
}
