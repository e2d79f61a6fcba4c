//! Presence: who is online in a namespace, across every edge, kept in NATS.
//!
//! Each edge writes, per namespace, one message holding the users joined to
//! that namespace on it and their connection counts ([`NodeMembers`]) to
//! `presence.<ns>.<node>` in the [`PRESENCE_STREAM`](crate::stream::PRESENCE_STREAM)
//! stream, which keeps the last message of each subject only. Every message
//! carries a `Nats-TTL` header (NATS 2.11, ADR-43), so the set of an edge
//! that dies without a word ages out on its own; the edge rewrites it on
//! every change (coalesced) and as a heartbeat every third of the TTL.
//! Writes are therefore per edge and namespace, never per connection.
//!
//! Reading a namespace ([`read`]) is one batch direct get with `multi_last`
//! over `presence.<ns>.*`: the last message of every edge, merged. Direct
//! gets may be answered by a follower that is a little behind; presence is
//! eventually consistent, as it is in every system that offers it, so that
//! answer is taken as it is.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime},
};

use futures_util::StreamExt as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    direct_get,
    ids::{Namespace, UserId},
    subject::{direct_get_subject, presence_filter, presence_from_subject},
};

/// The header that gives a message its own time to live (whole seconds).
pub const TTL_HEADER: &str = "Nats-TTL";
/// Set on the marker JetStream leaves when a message ages out.
pub const MARKER_REASON_HEADER: &str = "Nats-Marker-Reason";
/// How many edges' sets one read merges at most: nats-server answers a
/// `multi_last` for at most 1024 subjects.
pub const MAX_NODES: usize = 1024;
/// How long a read waits for each reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What an edge writes for one namespace: its users there and how many
/// connections each has on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMembers {
    pub members: BTreeMap<UserId, u32>,
    /// The edge left users out to keep the message under NATS's payload limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One present user: a `presence` frame's and the publisher's answer's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Member {
    pub user: UserId,
    /// The user's connections joined to the namespace, on every edge.
    pub connections: u32,
}

/// A namespace's members, merged over every edge, sorted by user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    pub members: Vec<Member>,
    /// More users are present than are listed (or an edge left some out).
    pub truncated: bool,
}

/// One edge's set as read from the stream.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub node: String,
    pub members: NodeMembers,
    /// How long it has left before it ages out (never zero: an expired one
    /// is not returned).
    pub remaining: Duration,
}

/// Reading presence failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("NATS request failed: {0}")]
    Nats(#[from] async_nats::Error),
    #[error("no reply within {REPLY_TIMEOUT:?}")]
    TimedOut,
    #[error("direct get answered {status}: {description}")]
    Status { status: u16, description: String },
}

/// The `Nats-TTL` value for `ttl`: whole seconds, rounded up, at least 1
/// (nats-server refuses less than a second and ignores fractions).
pub fn ttl_header(ttl: Duration) -> String {
    let secs = ttl.as_millis().div_ceil(1000).max(1);
    format!("{secs}s")
}

/// Merges edges' sets: a user's connections add up; at most `max` members
/// are listed, sorted by user id.
pub fn merge<'a>(sets: impl IntoIterator<Item = &'a NodeMembers>, max: usize) -> Roster {
    let mut users: BTreeMap<&UserId, u32> = BTreeMap::new();
    let mut truncated = false;
    for set in sets {
        truncated |= set.truncated;
        for (user, &connections) in &set.members {
            let total = users.entry(user).or_default();
            *total = total.saturating_add(connections);
        }
    }
    let listed = users.len().min(max);
    truncated |= users.len() > max;
    Roster {
        members: users
            .into_iter()
            .take(listed)
            .map(|(user, connections)| Member {
                user: user.clone(),
                connections,
            })
            .collect(),
        truncated,
    }
}

/// A namespace's members: the last set of every edge, merged, at most `max` listed.
///
/// # Errors
/// The request failed or timed out, or the stream answered with an error.
pub async fn read(
    nats: &async_nats::Client,
    stream: &str,
    namespace: &Namespace,
    max: usize,
) -> Result<Roster, ReadError> {
    let records = read_nodes(nats, stream, namespace).await?;
    Ok(merge(records.iter().map(|r| &r.members), max))
}

/// The live set of every edge for `namespace`, one batch direct get with
/// `multi_last` (asked again if no replica was there to answer). Delete
/// markers, empty sets and sets past their TTL that the server has not
/// removed yet are left out.
///
/// # Errors
/// As [`read`].
pub async fn read_nodes(
    nats: &async_nats::Client,
    stream: &str,
    namespace: &Namespace,
) -> Result<Vec<NodeRecord>, ReadError> {
    direct_get::until_answered(
        || read_nodes_once(nats, stream, namespace),
        |err| matches!(err, ReadError::Status { status, .. } if *status == direct_get::NO_RESPONDERS),
    )
    .await
}

/// One attempt at [`read_nodes`].
async fn read_nodes_once(
    nats: &async_nats::Client,
    stream: &str,
    namespace: &Namespace,
) -> Result<Vec<NodeRecord>, ReadError> {
    let inbox = nats.new_inbox();
    let mut replies = tokio::time::timeout(REPLY_TIMEOUT, nats.subscribe(inbox.clone()))
        .await
        .map_err(|_| ReadError::TimedOut)?
        .map_err(|e| ReadError::Nats(e.into()))?;
    let request = serde_json::json!({
        "multi_last": [presence_filter(namespace).as_str()],
        "batch": MAX_NODES,
    });
    let body = serde_json::to_vec(&request).expect("a JSON request");
    tokio::time::timeout(
        REPLY_TIMEOUT,
        nats.publish_with_reply(String::from(direct_get_subject(stream)), inbox, body.into()),
    )
    .await
    .map_err(|_| ReadError::TimedOut)?
    .map_err(|e| ReadError::Nats(e.into()))?;
    let mut records = Vec::new();
    loop {
        let reply = tokio::time::timeout(REPLY_TIMEOUT, replies.next())
            .await
            .map_err(|_| ReadError::TimedOut)?
            .ok_or(ReadError::TimedOut)?;
        match reply.status.map(|s| s.as_u16()) {
            // End of batch, or nothing matched (no end-of-batch follows that).
            Some(204 | 404) => return Ok(records),
            Some(status) => {
                return Err(ReadError::Status {
                    status,
                    description: reply.description.clone().unwrap_or_default(),
                });
            }
            None => {
                if let Some(record) = record(&reply, SystemTime::now()) {
                    records.push(record);
                }
            }
        }
    }
}

/// The live set a direct get reply holds, or `None` for a delete marker, an
/// empty or unreadable set, or one already past its TTL.
fn record(reply: &async_nats::Message, now: SystemTime) -> Option<NodeRecord> {
    let headers = reply.headers.as_ref()?;
    let header = |name: &str| headers.get_last(name).map(|v| v.to_string());
    if header(MARKER_REASON_HEADER).is_some() {
        return None;
    }
    let (_, node) = presence_from_subject(&header("Nats-Subject")?)?;
    let stored_at = header("Nats-Time-Stamp")
        .and_then(|t| {
            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(SystemTime::from)?;
    let ttl = header(TTL_HEADER).and_then(|t| parse_ttl(&t))?;
    let remaining = (stored_at + ttl).duration_since(now).ok()?;
    let members: NodeMembers = serde_json::from_slice(&reply.payload).ok()?;
    if members.members.is_empty() && !members.truncated {
        return None;
    }
    Some(NodeRecord {
        node,
        members,
        remaining,
    })
}

/// A `Nats-TTL` value as this module writes it (`30s`) or in plain seconds.
fn parse_ttl(value: &str) -> Option<Duration> {
    let secs = value.strip_suffix('s').unwrap_or(value);
    secs.parse().ok().map(Duration::from_secs)
}

/// The users of a merged view, for diffs: present in `after` but not `before`
/// joined, the other way round left.
pub fn diff<'a>(
    before: &'a HashMap<UserId, u32>,
    after: &'a HashMap<UserId, u32>,
) -> (Vec<UserId>, Vec<UserId>) {
    let mut joined: Vec<UserId> = after
        .keys()
        .filter(|u| !before.contains_key(*u))
        .cloned()
        .collect();
    let mut left: Vec<UserId> = before
        .keys()
        .filter(|u| !after.contains_key(*u))
        .cloned()
        .collect();
    joined.sort();
    left.sort();
    (joined, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(users: &[(&str, u32)]) -> NodeMembers {
        NodeMembers {
            members: users
                .iter()
                .map(|(u, n)| (UserId::parse(*u).unwrap(), *n))
                .collect(),
            truncated: false,
        }
    }

    #[test]
    fn sets_merge_into_one_member_per_user_sorted_and_capped() {
        let a = set(&[("bob", 1), ("alice", 1), ("a.b", 1)]);
        let b = set(&[("alice", 1), ("*", 2)]);
        let roster = merge([&a, &b], 10);
        let listed: Vec<(&str, u32)> = roster
            .members
            .iter()
            .map(|m| (m.user.as_str(), m.connections))
            .collect();
        assert_eq!(listed, [("*", 2), ("a.b", 1), ("alice", 2), ("bob", 1)]);
        assert!(!roster.truncated);

        let capped = merge([&a, &b], 3);
        assert_eq!(capped.members.len(), 3);
        assert!(capped.truncated);
        assert!(merge([&a, &b], 4).members.len() == 4 && !merge([&a, &b], 4).truncated);
    }

    #[test]
    fn ttls_are_whole_seconds_rounded_up() {
        assert_eq!(ttl_header(Duration::from_millis(30_000)), "30s");
        assert_eq!(ttl_header(Duration::from_millis(2_500)), "3s");
        assert_eq!(ttl_header(Duration::from_millis(10)), "1s");
        assert_eq!(parse_ttl("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_ttl("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_ttl("never"), None);
    }

    #[test]
    fn a_set_is_a_json_object_of_users_and_counts() {
        let json = serde_json::to_string(&set(&[("a.b", 2)])).unwrap();
        assert_eq!(json, r#"{"members":{"a.b":2}}"#);
        let back: NodeMembers = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set(&[("a.b", 2)]));
    }
}
