//! One channel's local sockets and its high-water seq: each notification is
//! encoded once and its bytes queued on every member's outbox, never twice
//! and never below what the members already have.
//!
//! `hw` is the last seq handed to the members. Only the channel's forwarder
//! task delivers, so deliveries arrive in seq order and `hw` only grows.

use std::{collections::HashMap, sync::Mutex, time::SystemTime};

use axum::extract::ws::Utf8Bytes;
use herald_shared::{channel::Channel, frames::encode_event_frame, subject::stored_subject};

use super::recovery::Recovery;
use crate::{frame::FrameKind, outbox::Outbox};

/// Identifies one socket's membership in the hub.
pub(crate) type MemberId = u64;

/// One channel with local sockets.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) channel: Channel,
    /// `notify.…`: where the channel's history is read from.
    pub(super) stored_subject: String,
    /// Members change only under the hub's `channels` lock as well, so a
    /// join and the last leave of the same channel cannot interleave.
    state: Mutex<EntryState>,
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
    /// Holds live frames while the member replays.
    recovery: Recovery<(Utf8Bytes, FrameKind)>,
}

// === impl Entry ===

impl Entry {
    pub(super) fn new(channel: Channel) -> Self {
        Self {
            stored_subject: stored_subject(&channel).into(),
            channel,
            state: Mutex::default(),
        }
    }

    pub(super) fn hw(&self) -> u64 {
        self.state.lock().expect("entry lock").hw
    }

    /// Where live delivery starts when the subscription starts: the
    /// channel's last stored seq, read after the subscription is in place.
    /// Never lowers `hw`: an answer from a replica behind must not make
    /// the channel deliver again what it delivered already.
    pub(super) fn start_at(&self, hw: u64) {
        let mut state = self.state.lock().expect("entry lock");
        state.hw = state.hw.max(hw);
    }

    /// Adds `member`; with `replaying`, its live frames are held until
    /// [`Entry::finish_replay`].
    pub(super) fn add(&self, member: MemberId, outbox: &Outbox, replaying: bool) {
        let joining = Member {
            outbox: outbox.clone(),
            recovery: Recovery::new(replaying),
        };
        self.state
            .lock()
            .expect("entry lock")
            .members
            .insert(member, joining);
    }

    /// Removes `member`; `true` when no member is left.
    pub(super) fn remove(&self, member: MemberId) -> bool {
        let mut state = self.state.lock().expect("entry lock");
        state.members.remove(&member);
        state.members.is_empty()
    }

    /// Ends `member`'s replay: queues the live frames held meanwhile that lie
    /// above `replayed_upto`. Under the entry lock, so no live frame can
    /// overtake the held ones.
    pub(super) fn finish_replay(&self, member: MemberId, replayed_upto: u64) {
        let mut state = self.state.lock().expect("entry lock");
        let Some(member) = state.members.get_mut(&member) else {
            return;
        };
        for (frame, kind) in member.recovery.finish(replayed_upto) {
            queue(&member.outbox, frame, kind);
        }
    }

    /// Hands one notification to every member, unless it is at or below `hw`;
    /// returns how many members it was handed to.
    /// `stored_at` (its `Nats-Time-Stamp`) travels with the frame to the
    /// socket write, where the delivery latency is measured.
    pub(super) fn deliver(&self, seq: u64, payload: &[u8], stored_at: Option<SystemTime>) -> usize {
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
        let kind = FrameKind::Live { seq, stored_at };
        for member in state.members.values_mut() {
            if let Some((frame, kind)) = member.recovery.offer(seq, (frame.clone(), kind)) {
                queue(&member.outbox, frame, kind);
            }
        }
        state.members.len()
    }
}

/// Queues a live event frame on a member's outbox; `kind` is what its socket
/// write reports to the metrics (a delivery and its latency).
fn queue(outbox: &Outbox, frame: Utf8Bytes, kind: FrameKind) {
    outbox.push_with(frame, kind);
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::outbox::{OutboxReceiver, outbox};

    fn entry() -> Entry {
        Entry::new("ns:team-42".parse().expect("a channel"))
    }

    fn socket() -> (Outbox, OutboxReceiver) {
        outbox(1 << 20, CancellationToken::new())
    }

    fn deliver(entry: &Entry, seq: u64) -> usize {
        entry.deliver(seq, br#"{"id":"x"}"#, None)
    }

    /// The seqs of the event frames queued on a socket, in queue order.
    fn seqs(socket: &mut OutboxReceiver) -> Vec<u64> {
        std::iter::from_fn(|| socket.try_recv())
            .map(|queued| {
                let frame: serde_json::Value = serde_json::from_str(&queued.text).expect("JSON");
                assert_eq!(frame["channel"], "ns:team-42");
                let seq = frame["seq"].as_u64().expect("a seq");
                let kind = FrameKind::Live {
                    seq,
                    stored_at: None,
                };
                assert_eq!(queued.kind, kind, "the kind carries the frame's seq");
                seq
            })
            .collect()
    }

    #[test]
    fn every_member_gets_each_frame_and_a_member_that_left_gets_nothing() {
        let entry = entry();
        let ((a, mut a_rx), (b, mut b_rx)) = (socket(), socket());
        entry.add(1, &a, false);
        entry.add(2, &b, false);
        assert_eq!(deliver(&entry, 5), 2, "handed to both members");
        assert!(!entry.remove(1), "one member left");
        assert_eq!(deliver(&entry, 6), 1);
        assert_eq!(seqs(&mut a_rx), [5]);
        assert_eq!(seqs(&mut b_rx), [5, 6]);
        assert!(entry.remove(2), "the last member left");
    }

    #[test]
    fn a_seq_at_or_below_hw_is_dropped_and_one_above_moves_hw() {
        let entry = entry();
        let (a, mut a_rx) = socket();
        entry.add(1, &a, false);
        entry.start_at(10);
        assert_eq!(deliver(&entry, 10), 0, "stored before the subscription");
        assert_eq!(deliver(&entry, 12), 1);
        assert_eq!(entry.hw(), 12);
        assert_eq!(deliver(&entry, 12), 0, "a second copy");
        assert_eq!(deliver(&entry, 11), 0, "behind hw");
        assert_eq!(deliver(&entry, 13), 1);
        assert_eq!(seqs(&mut a_rx), [12, 13]);
    }

    #[test]
    fn a_stored_notification_that_is_no_json_object_is_skipped_and_leaves_hw() {
        let entry = entry();
        let (a, mut a_rx) = socket();
        entry.add(1, &a, false);
        assert_eq!(entry.deliver(3, b"[1]", None), 0);
        assert_eq!(entry.hw(), 0);
        assert_eq!(seqs(&mut a_rx), [] as [u64; 0]);
    }

    #[test]
    fn a_replaying_member_gets_held_frames_above_its_replay_then_live_in_order() {
        let entry = entry();
        let ((live, mut live_rx), (resuming, mut resuming_rx)) = (socket(), socket());
        entry.add(1, &live, false);
        entry.start_at(10);
        entry.add(2, &resuming, true);
        for seq in [11, 12, 13] {
            assert_eq!(deliver(&entry, seq), 2);
        }
        assert_eq!(
            seqs(&mut resuming_rx),
            [] as [u64; 0],
            "held while replaying"
        );
        entry.finish_replay(2, 12);
        deliver(&entry, 14);
        assert_eq!(
            seqs(&mut resuming_rx),
            [13, 14],
            "12 and below were replayed"
        );
        assert_eq!(
            seqs(&mut live_rx),
            [11, 12, 13, 14],
            "the other member never waited"
        );
        entry.finish_replay(3, 12);
        entry.finish_replay(2, 0);
        assert_eq!(seqs(&mut resuming_rx), [] as [u64; 0], "handed over once");
    }
}
