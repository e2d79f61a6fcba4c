//! Presence on this edge: which users are joined to which namespace here,
//! written to NATS per namespace (`herald_shared::presence`), and the
//! `presence_diff` frames of sockets that asked for them (`watch`).
//!
//! Writes are per (edge, namespace), never per connection: a change marks
//! the namespace dirty and one task writes every dirty namespace's whole set
//! at most every [`TICK`], and rewrites each one every third of the TTL as a
//! heartbeat. A namespace whose last user left here is written once, empty,
//! and then forgotten. After a NATS reconnect every set is written again.
//!
//! The guards ([`Here`], [`watch::Watching`]) are held by a connection's
//! `Attachment`, so a connection that ends in any way, a panic included,
//! leaves.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::{HeaderMap, connection::State as NatsState, jetstream};
use futures_util::future::join_all;
use herald_shared::{
    ids::{Namespace, UserId},
    presence::{NodeMembers, Roster, TTL_HEADER, ttl_header},
    stream::PRESENCE_STREAM,
    subject::presence_subject,
};
use tokio::time::Instant;

mod watch;

pub(crate) use watch::Watching;

use crate::metrics::Metrics;

/// How often dirty namespaces are written and diffs sent: a change reaches
/// the stream within this, and a watcher's socket about as much later.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// How long a write may wait for its acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Presence reads in flight at once on the history connection (answers to
/// `presence` frames, new watches, resyncs); more wait their turn, so a
/// flood of `presence` frames cannot crowd out history reads.
const READS_AT_ONCE: usize = 8;
/// Room for headers and framing below NATS's payload limit.
const PAYLOAD_HEADROOM: usize = 4 * 1024;

/// This edge's presence: shared as `Arc<Presence>`.
#[derive(Debug)]
pub(crate) struct Presence {
    node: String,
    /// The live connection: writes and the watchers' subscriptions.
    nats: async_nats::Client,
    jetstream: jetstream::Context,
    /// The history connection: reads of the stream.
    history: async_nats::Client,
    ttl: Duration,
    max_members: usize,
    metrics: Arc<Metrics>,
    local: Mutex<HashMap<Namespace, Local>>,
    watches: watch::Watches,
    reads: Arc<tokio::sync::Semaphore>,
}

/// This edge's users in one namespace.
#[derive(Debug, Default)]
struct Local {
    members: BTreeMap<UserId, u32>,
    /// Changed since it was last written.
    dirty: bool,
    written_at: Option<Instant>,
}

/// A connection joined to a namespace: its user is present there until dropped.
#[derive(Debug)]
pub(crate) struct Here {
    presence: Arc<Presence>,
    namespace: Namespace,
    user: UserId,
}

impl Drop for Here {
    fn drop(&mut self) {
        self.presence.leave(&self.namespace, &self.user);
    }
}

impl Here {
    pub(crate) fn namespace(&self) -> &Namespace {
        &self.namespace
    }
}

impl Presence {
    pub(crate) fn new(
        node: String,
        nats: async_nats::Client,
        history: async_nats::Client,
        ttl: Duration,
        max_members: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node,
            jetstream: jetstream::new(nats.clone()),
            nats,
            history,
            ttl,
            max_members,
            metrics,
            local: Mutex::default(),
            watches: watch::Watches::default(),
            reads: Arc::new(tokio::sync::Semaphore::new(READS_AT_ONCE)),
        }
    }

    /// `user` joined `namespace` with one more connection here.
    pub(crate) fn join(self: &Arc<Self>, namespace: &Namespace, user: &UserId) -> Here {
        let mut local = self.local.lock().expect("presence lock");
        let entry = local.entry(namespace.clone()).or_default();
        let count = entry.members.entry(user.clone()).or_default();
        *count += 1;
        // Counts are part of the set too: written on the next tick, coalesced.
        entry.dirty = true;
        Here {
            presence: self.clone(),
            namespace: namespace.clone(),
            user: user.clone(),
        }
    }

    fn leave(&self, namespace: &Namespace, user: &UserId) {
        let mut local = self.local.lock().expect("presence lock");
        let Some(entry) = local.get_mut(namespace) else {
            return;
        };
        if let Some(count) = entry.members.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                entry.members.remove(user);
            }
            entry.dirty = true;
        }
    }

    /// A namespace's members on every edge, at most `--presence-max-members`.
    pub(crate) async fn read(
        &self,
        namespace: &Namespace,
    ) -> Result<Roster, herald_shared::presence::ReadError> {
        let _turn = self.reads.acquire().await.expect("never closed");
        herald_shared::presence::read(&self.history, PRESENCE_STREAM, namespace, self.max_members)
            .await
    }

    /// Writes dirty sets and heartbeats, and sends diffs, every [`TICK`],
    /// for as long as the edge runs. The two never wait for each other: a
    /// write waiting for its ack (a stream leader election) does not hold
    /// back a `left` that is due.
    pub(crate) async fn run(self: Arc<Self>) {
        let diffs = async {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                self.watches.send_diffs(Instant::now());
            }
        };
        let writes = async {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut connected = true;
            loop {
                tick.tick().await;
                let now_connected = self.nats.connection_state() == NatsState::Connected;
                if now_connected && !connected {
                    // What was written while away may be lost, and so may what
                    // others wrote: write everything, read everything again.
                    self.mark_all_dirty();
                    self.watches.resync_all(&self.history, &self.reads);
                }
                connected = now_connected;
                if connected {
                    self.write(false).await;
                }
            }
        };
        tokio::join!(diffs, writes);
    }

    /// Writes every set now (on shutdown, after the sessions ended, so
    /// their users leave at once rather than at the TTL). Every set, not
    /// only the dirty ones: a pass cut short by the shutdown may have taken
    /// some without writing them.
    pub(crate) async fn flush(&self) {
        self.mark_all_dirty();
        self.write(true).await;
    }

    fn mark_all_dirty(&self) {
        for entry in self.local.lock().expect("presence lock").values_mut() {
            entry.dirty = true;
        }
    }

    /// One pass: every dirty set, and every set not written for a third of
    /// the TTL, goes out as one message each.
    async fn write(&self, only_dirty: bool) {
        let now = Instant::now();
        let heartbeat = self.ttl / 3;
        let due: Vec<(Namespace, BTreeMap<UserId, u32>)> = {
            let mut local = self.local.lock().expect("presence lock");
            local
                .iter_mut()
                .filter(|(_, entry)| {
                    entry.dirty
                        || (!only_dirty
                            && entry
                                .written_at
                                .is_none_or(|at| now.duration_since(at) >= heartbeat))
                })
                .map(|(namespace, entry)| {
                    entry.dirty = false;
                    entry.written_at = Some(now);
                    (namespace.clone(), entry.members.clone())
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let limit = self
            .nats
            .server_info()
            .max_payload
            .saturating_sub(PAYLOAD_HEADROOM);
        let writes = due.into_iter().map(|(namespace, members)| async move {
            let payload = encode(members, limit);
            let ok = self.publish(&namespace, payload).await;
            (namespace, ok)
        });
        let results = join_all(writes).await;
        let mut written = 0;
        let mut local = self.local.lock().expect("presence lock");
        for (namespace, ok) in results {
            if ok {
                written += 1;
            }
            let Some(entry) = local.get_mut(&namespace) else {
                continue;
            };
            if !ok {
                entry.dirty = true;
            } else if entry.members.is_empty() && !entry.dirty {
                // Written empty: nobody here any more, nothing to keep alive.
                local.remove(&namespace);
            }
        }
        drop(local);
        self.metrics.presence_written(written);
    }

    /// One set, with its TTL; `true` once JetStream stored it.
    async fn publish(&self, namespace: &Namespace, payload: Vec<u8>) -> bool {
        let subject = presence_subject(namespace, &self.node);
        let mut headers = HeaderMap::new();
        headers.insert(TTL_HEADER, ttl_header(self.ttl).as_str());
        let sent = self
            .jetstream
            .publish_with_headers(String::from(subject), headers, payload.into())
            .await;
        let acked = match sent {
            Ok(ack) => tokio::time::timeout(ACK_TIMEOUT, ack).await,
            Err(err) => {
                tracing::debug!(error = %err, %namespace, "Writing presence failed.");
                return false;
            }
        };
        match acked {
            Ok(Ok(_)) => true,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, %namespace, "Writing presence failed.");
                false
            }
            Err(_) => false,
        }
    }
}

/// A set as JSON, at most `limit` bytes: past it, users are left out (in id
/// order) and the set says `truncated`.
fn encode(mut members: BTreeMap<UserId, u32>, limit: usize) -> Vec<u8> {
    let whole = serde_json::to_vec(&NodeMembers {
        members: members.clone(),
        truncated: false,
    })
    .expect("a set serializes");
    if whole.len() <= limit {
        return whole;
    }
    // Each entry costs its escaped id, quotes, a colon, a count and a comma:
    // at most 6 bytes per id byte plus 16.
    let mut budget = limit.saturating_sub(64);
    let mut kept = BTreeMap::new();
    while let Some((user, count)) = members.pop_first() {
        let cost = user.as_str().len() * 6 + 16;
        if cost > budget {
            break;
        }
        budget -= cost;
        kept.insert(user, count);
    }
    tracing::warn!(
        kept = kept.len(),
        "A presence set exceeds the NATS payload limit; some users are left out."
    );
    serde_json::to_vec(&NodeMembers {
        members: kept,
        truncated: true,
    })
    .expect("a set serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_too_large_for_one_message_is_cut_and_says_so() {
        let members: BTreeMap<UserId, u32> = (0..1000)
            .map(|i| (UserId::parse(format!("user-{i:04}")).unwrap(), 1))
            .collect();
        let whole = encode(members.clone(), 1 << 20);
        let set: NodeMembers = serde_json::from_slice(&whole).unwrap();
        assert_eq!(set.members.len(), 1000);
        assert!(!set.truncated);

        let cut = encode(members, 4096);
        assert!(cut.len() <= 4096);
        let set: NodeMembers = serde_json::from_slice(&cut).unwrap();
        assert!(set.truncated);
        assert!(!set.members.is_empty() && set.members.len() < 1000);
    }
}
