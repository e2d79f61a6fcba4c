//! A connection's channels, for every transport: joining them, where each
//! starts for the client (the epoch rule), `welcome`, replay or live per
//! channel, and leaving them all, once, when the connection ends.
//!
//! A transport (the WebSocket session, the SSE stream) only writes the
//! queued frames and ends the connection; what it is attached to, and from
//! where, is decided here, as centrifuge's one `Client` serves every
//! `Transport`.

use std::collections::BTreeMap;

use axum::extract::ws::Utf8Bytes;
use herald_shared::{
    channel::Channel,
    error_code::ErrorCode,
    frames::ServerFrame,
    ids::{Namespace, UserId},
};
use tokio_util::sync::CancellationToken;

use crate::{
    disconnect::Disconnect,
    frame::Slot,
    hub::{JoinError, MemberId},
    outbox::Outbox,
    replay::{Cursor, Replay, Replays},
    state::AppState,
};

/// What `welcome` says about the connection besides its channels.
pub(crate) struct Hello {
    pub(crate) session_id: uuid::Uuid,
    pub(crate) user: UserId,
    pub(crate) token_exp: u64,
}

/// One connection's membership in the hub: left on drop, also if the
/// connection's task panics, so no channel (nor the node's NATS
/// subscription for it) is kept for good.
#[derive(Debug)]
pub(crate) struct Attachment {
    state: AppState,
    member: MemberId,
    outbox: Outbox,
    /// The joined channels, in join order (the user's own first), each with
    /// the slot its frames are tagged with.
    channels: Vec<(Channel, Slot)>,
    /// The next channel's slot: slots are never reused, so the channels a
    /// connection starts with have slots 0, 1, … in their order.
    next_slot: Slot,
    /// Running replays, one per channel; stopped when the channel is left,
    /// aborted when the connection ends.
    replays: Replays,
    /// Cancelled by a replay that could not read the stream: the connection
    /// must end.
    failed: CancellationToken,
}

/// The channels a connection starts with: the user's own, then the namespaces.
pub(crate) fn channels(user: &UserId, namespaces: &[Namespace]) -> Vec<Channel> {
    let mut channels = vec![Channel::user(user.clone())];
    channels.extend(namespaces.iter().cloned().map(Channel::namespace));
    channels
}

/// Where a channel starts for the client, the seq `welcome` tells it: the
/// cursor it resumes from if the cursor is of this epoch (the replay brings
/// what is above it), else the channel's seq when it joined (a cursor of
/// another epoch gets `history_truncated` and live delivery).
pub(crate) fn start_seq(cursor: Option<&Cursor>, epoch: &str, joined_at: u64) -> u64 {
    match cursor {
        Some(cursor) if cursor.is_of(epoch) => cursor.since,
        _ => joined_at,
    }
}

impl Attachment {
    /// Attached to nothing yet; `failed` is cancelled if a replay fails.
    pub(crate) fn new(state: AppState, outbox: Outbox, failed: CancellationToken) -> Self {
        Self {
            member: state.hub.member_id(),
            state,
            outbox,
            channels: Vec::new(),
            next_slot: 0,
            replays: Replays::default(),
            failed,
        }
    }

    /// Joins each channel of `start`, queues `welcome` first (so it is
    /// written before any event of those channels), then replays each
    /// channel from its cursor or lets it go live, then queues `notices`.
    /// Returns where each channel starts for the client, in `start`'s order.
    pub(crate) async fn attach(
        &mut self,
        hello: Hello,
        start: Vec<(Channel, Option<Cursor>)>,
        notices: Vec<ServerFrame>,
    ) -> Result<Vec<u64>, Disconnect> {
        // Every channel joins as "replaying": its live frames are held, so
        // `welcome` (which carries each channel's starting seq) still goes first.
        let mut joined = Vec::with_capacity(start.len());
        for (channel, cursor) in start {
            match self.join(&channel, true).await {
                Ok(hw) => joined.push((channel, cursor, hw)),
                Err(err) => {
                    tracing::warn!(error = %err, "Joining a channel failed.");
                    return Err(Disconnect::JoinFailed);
                }
            }
        }
        let epoch = &*self.state.epoch;
        let seqs: Vec<u64> = joined
            .iter()
            .map(|(_, cursor, hw)| start_seq(cursor.as_ref(), epoch, *hw))
            .collect();
        let config = &self.state.config;
        self.send(ServerFrame::Welcome {
            session_id: hello.session_id.to_string(),
            user: hello.user,
            node: config.node_id.clone(),
            epoch: epoch.to_string(),
            heartbeat_ms: config.heartbeat.as_millis() as u64,
            channels: joined.iter().map(|(channel, ..)| channel.clone()).collect(),
            token_exp: hello.token_exp,
            seqs: joined
                .iter()
                .zip(&seqs)
                .map(|((channel, ..), seq)| (channel.clone(), *seq))
                .collect::<BTreeMap<_, _>>(),
        });
        // Then each channel goes live above its join-time seq, after its replay if resuming.
        for (channel, cursor, hw) in joined {
            match cursor {
                Some(cursor) => self.replay(channel, cursor, hw),
                None => self.state.hub.finish_replay(&channel, self.member, hw),
            }
        }
        for notice in notices {
            self.send(notice);
        }
        Ok(seqs)
    }

    /// Joins `channel` and returns its `hw`: live delivery starts above it
    /// (held until the replay finishes, with `replaying`).
    pub(crate) async fn join(
        &mut self,
        channel: &Channel,
        replaying: bool,
    ) -> Result<u64, JoinError> {
        let slot = self.next_slot;
        let outbox = self.outbox.for_channel(slot);
        let hw = self
            .state
            .hub
            .join(channel, self.member, &outbox, replaying)
            .await?;
        // Recorded at once, so whatever happens next leaves it.
        self.channels.push((channel.clone(), slot));
        // Only SSE reads slots, and a stream joins each channel once: a
        // socket that subscribed 2^32 times may wrap around harmlessly.
        self.next_slot = self.next_slot.wrapping_add(1);
        Ok(hw)
    }

    /// Replays `channel` from `cursor` up to `upto` alongside the
    /// connection's writes, then lets it go live.
    pub(crate) fn replay(&mut self, channel: Channel, cursor: Cursor, upto: u64) {
        let outbox = match self.slot(&channel) {
            Some(slot) => self.outbox.for_channel(slot),
            None => self.outbox.clone(),
        };
        self.replays.start(Replay {
            state: self.state.clone(),
            channel,
            member: self.member,
            outbox,
            cursor,
            upto,
            failed: self.failed.clone(),
        });
    }

    /// Leaves `channel` once its replay can queue nothing more, so a frame
    /// queued next (`unsubscribed`) comes after its last event; `false` if
    /// it was not joined.
    pub(crate) async fn leave(&mut self, channel: &Channel) -> bool {
        let Some(at) = self.channels.iter().position(|(c, _)| c == channel) else {
            return false;
        };
        self.channels.remove(at);
        self.replays.stop(channel).await;
        self.state.hub.leave(channel, self.member);
        true
    }

    /// A service took `namespace` from the user: leaves it (after its last
    /// queued event) and tells the client `unsubscribed` with `REVOKED`.
    pub(crate) async fn revoke(&mut self, namespace: Namespace) {
        let channel = Channel::namespace(namespace);
        if self.leave(&channel).await {
            self.send(ServerFrame::Unsubscribed {
                r#ref: None,
                channel,
                code: Some(ErrorCode::Revoked),
            });
        }
    }

    /// Leaves `channel` at once, its replay aborted without waiting.
    pub(crate) fn drop_channel(&mut self, channel: &Channel) {
        self.channels.retain(|(c, _)| c != channel);
        self.replays.abort(channel);
        self.state.hub.leave(channel, self.member);
    }

    pub(crate) fn is_joined(&self, channel: &Channel) -> bool {
        self.slot(channel).is_some()
    }

    fn slot(&self, channel: &Channel) -> Option<Slot> {
        self.channels
            .iter()
            .find_map(|(c, slot)| (c == channel).then_some(*slot))
    }

    /// The joined namespaces (every channel but the user's own).
    pub(crate) fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.channels.iter().filter_map(|(c, _)| c.as_namespace())
    }

    /// The connection's queue, for frames sent later by tasks of their own
    /// (the answers to calls).
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Queues a control frame.
    pub(crate) fn send(&self, frame: ServerFrame) {
        self.outbox.push(Utf8Bytes::from(frame.to_json()));
    }

    fn leave_all(&self) {
        for (channel, _) in &self.channels {
            self.state.hub.leave(channel, self.member);
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.leave_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_of_this_epoch_or_none_starts_where_it_is_else_at_the_join() {
        let cursor = |epoch: Option<&str>| Cursor {
            since: 7,
            epoch: epoch.map(str::to_owned),
        };
        assert_eq!(start_seq(None, "e1", 40), 40);
        assert_eq!(start_seq(Some(&cursor(None)), "e1", 40), 7);
        assert_eq!(start_seq(Some(&cursor(Some("e1"))), "e1", 40), 7);
        assert_eq!(start_seq(Some(&cursor(Some("e0"))), "e1", 40), 40);
    }
}
