//! `presence_diff` for sockets subscribed with `presence: true`: per watched
//! namespace, one core NATS subscription to `presence.<ns>.*` (every edge's
//! writes, this one's included) and the merged view of every edge's last
//! set, from which a diff goes to the watching sockets every tick.
//!
//! A set ages out here as it does in the stream: at its `Nats-TTL` after it
//! arrived. JetStream's delete marker for it is stored in the stream but is
//! not sent to core subscribers, so a watcher cannot wait for it; an edge
//! that was killed simply stops sending, and its users are `left` a TTL
//! after its last heartbeat. A new watch, and every watch after a NATS
//! reconnect, reads the stream (`multi_last`) for the sets written before.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::ws::Utf8Bytes;
use futures_util::StreamExt as _;
use herald_shared::{
    channel::Channel,
    frames::ServerFrame,
    ids::{Namespace, UserId},
    presence::{NodeMembers, TTL_HEADER, read_nodes},
    stream::PRESENCE_STREAM,
    subject::{presence_filter, presence_from_subject},
};
use tokio::time::Instant;

use super::Presence;
use crate::{hub::MemberId, outbox::Outbox};

/// The watched namespaces of this edge.
#[derive(Debug, Default)]
pub(super) struct Watches(Arc<Mutex<HashMap<Namespace, Watch>>>);

#[derive(Debug)]
struct Watch {
    sockets: HashMap<MemberId, Outbox>,
    /// Each edge's last set, and when it ages out.
    nodes: HashMap<String, NodeView>,
    /// The users the sockets were last told about.
    reported: BTreeSet<UserId>,
    /// Some edge's set of users changed since the last diff (a heartbeat
    /// with the same users does not count): only then is the view merged again.
    changed: bool,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct NodeView {
    members: BTreeMap<UserId, u32>,
    expires: Instant,
    /// When a live message last set it: a read of the stream begun before
    /// that is older and must not overwrite it.
    updated: Instant,
}

/// A socket's watch of a namespace; dropped, the socket gets no more diffs
/// (and the subscription goes with the last watcher).
#[derive(Debug)]
pub(crate) struct Watching {
    presence: Arc<Presence>,
    namespace: Namespace,
    member: MemberId,
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut watches = self.presence.watches.0.lock().expect("watch lock");
        if let Some(watch) = watches.get_mut(&self.namespace) {
            watch.sockets.remove(&self.member);
            if watch.sockets.is_empty() {
                watch.task.abort();
                watches.remove(&self.namespace);
            }
        }
    }
}

impl Presence {
    /// Sends `presence_diff` frames for `namespace` to `outbox` from now on.
    /// The first watcher subscribes and reads the stream before this returns,
    /// so any change after it is a diff.
    pub(crate) async fn watch(
        self: &Arc<Self>,
        namespace: &Namespace,
        member: MemberId,
        outbox: &Outbox,
    ) -> Result<Watching, async_nats::Error> {
        let watching = Watching {
            presence: self.clone(),
            namespace: namespace.clone(),
            member,
        };
        if let Some(watch) = self
            .watches
            .0
            .lock()
            .expect("watch lock")
            .get_mut(namespace)
        {
            watch.sockets.insert(member, outbox.clone());
            return Ok(watching);
        }
        let subscriber = self
            .nats
            .subscribe(String::from(presence_filter(namespace)))
            .await?;
        let started = Instant::now();
        let records = {
            let _turn = self.reads.acquire().await.expect("never closed");
            read_nodes(&self.history, PRESENCE_STREAM, namespace).await?
        };
        let mut watches = self.watches.0.lock().expect("watch lock");
        if let Some(watch) = watches.get_mut(namespace) {
            // Another socket set it up meanwhile; this subscription goes.
            watch.sockets.insert(member, outbox.clone());
            return Ok(watching);
        }
        let mut nodes = HashMap::new();
        apply_read(&mut nodes, records, started);
        let reported = users(&nodes);
        let task = tokio::spawn(receive(
            self.watches.0.clone(),
            namespace.clone(),
            subscriber,
            self.ttl,
        ));
        watches.insert(
            namespace.clone(),
            Watch {
                sockets: HashMap::from([(member, outbox.clone())]),
                nodes,
                reported,
                changed: false,
                task,
            },
        );
        Ok(watching)
    }
}

impl Watches {
    /// Ages out sets past their TTL and tells each watching socket who came
    /// and went since the last tick.
    pub(super) fn send_diffs(&self, now: Instant) {
        let mut watches = self.0.lock().expect("watch lock");
        for (namespace, watch) in watches.iter_mut() {
            let before = watch.nodes.len();
            watch.nodes.retain(|_, node| node.expires > now);
            if !std::mem::take(&mut watch.changed) && watch.nodes.len() == before {
                continue;
            }
            let current = users(&watch.nodes);
            if current == watch.reported {
                continue;
            }
            let joined: Vec<UserId> = current.difference(&watch.reported).cloned().collect();
            let left: Vec<UserId> = watch.reported.difference(&current).cloned().collect();
            watch.reported = current;
            let frame = ServerFrame::PresenceDiff {
                channel: Channel::namespace(namespace.clone()),
                joined,
                left,
            };
            let frame = Utf8Bytes::from(frame.to_json());
            for outbox in watch.sockets.values() {
                outbox.push(frame.clone());
            }
        }
    }

    /// After a NATS reconnect: reads every watched namespace again, for the
    /// sets written while this edge was away. Adds and refreshes only; a set
    /// that is gone ages out on its own.
    pub(super) fn resync_all(
        &self,
        history: &async_nats::Client,
        reads: &Arc<tokio::sync::Semaphore>,
    ) {
        let namespaces: Vec<Namespace> =
            self.0.lock().expect("watch lock").keys().cloned().collect();
        for namespace in namespaces {
            let watches = self.0.clone();
            let history = history.clone();
            let reads = reads.clone();
            tokio::spawn(async move {
                let _turn = reads.acquire().await.expect("never closed");
                let started = Instant::now();
                match read_nodes(&history, PRESENCE_STREAM, &namespace).await {
                    Ok(records) => {
                        if let Some(watch) = watches.lock().expect("watch lock").get_mut(&namespace)
                        {
                            apply_read(&mut watch.nodes, records, started);
                            watch.changed = true;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, %namespace, "Reading presence again failed.")
                    }
                }
            });
        }
    }
}

/// Takes each edge's set from `records` unless a live message newer than
/// the read (begun at `started`) set it.
fn apply_read(
    nodes: &mut HashMap<String, NodeView>,
    records: Vec<herald_shared::presence::NodeRecord>,
    started: Instant,
) {
    let now = Instant::now();
    for record in records {
        if nodes.get(&record.node).is_some_and(|n| n.updated > started) {
            continue;
        }
        nodes.insert(
            record.node,
            NodeView {
                members: record.members.members,
                expires: now + record.remaining,
                updated: started,
            },
        );
    }
}

fn users(nodes: &HashMap<String, NodeView>) -> BTreeSet<UserId> {
    nodes
        .values()
        .flat_map(|node| node.members.keys().cloned())
        .collect()
}

/// Feeds one namespace's live writes into its view until the watch ends.
async fn receive(
    watches: Arc<Mutex<HashMap<Namespace, Watch>>>,
    namespace: Namespace,
    mut subscriber: async_nats::Subscriber,
    default_ttl: Duration,
) {
    while let Some(message) = subscriber.next().await {
        let Some((_, node)) = presence_from_subject(&message.subject) else {
            continue;
        };
        let Ok(set) = serde_json::from_slice::<NodeMembers>(&message.payload) else {
            continue;
        };
        let ttl = message
            .headers
            .as_ref()
            .and_then(|h| h.get_last(TTL_HEADER))
            .and_then(|v| v.as_str().trim_end_matches('s').parse().ok())
            .map_or(default_ttl, Duration::from_secs);
        let now = Instant::now();
        let mut watches = watches.lock().expect("watch lock");
        let Some(watch) = watches.get_mut(&namespace) else {
            return;
        };
        // An empty set is kept (it lists nobody) so that a read begun
        // before it cannot bring the edge's old set back.
        let view = NodeView {
            members: set.members,
            expires: now + ttl,
            updated: now,
        };
        let same_users = watch
            .nodes
            .get(&node)
            .is_some_and(|old| old.members.keys().eq(view.members.keys()));
        watch.changed |= !same_users;
        watch.nodes.insert(node, view);
    }
}
