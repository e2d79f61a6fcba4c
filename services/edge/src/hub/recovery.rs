//! Recovery buffering: the live frames held for a member while it replays a
//! channel from the stream, and the hand-over to live when the replay ends.
//!
//! A resuming member joins the channel at `hw` and replays its history
//! `(since, upto]` (with `upto` at least the `hw` it joined at). Live frames
//! keep arriving meanwhile, and must reach the client after the history:
//! they are held here. When the replay ends, the held frames above `upto`
//! are queued, in the order they came (seq order), and those at or below are
//! dropped, since the replay sent them. So every seq above `since` reaches
//! the client once, in order. The caller hands over under the same lock as
//! it delivers, so no later live frame can overtake the held ones.
//!
//! After the hand-over the member never takes a seq at or below `upto` (nor
//! below its own cursor, which `upto` is when the client was further on):
//! a channel whose `hw` was read from a replica behind may repair seqs the
//! client has already, and those must not reach it a second time.
//!
//! Pure logic over `(seq, frame)` pairs: the hub's frames are one type of
//! frame among any.

use std::mem;

/// How a member of a channel takes the channel's live frames.
#[derive(Debug)]
pub(super) enum Recovery<F> {
    /// Live frames above `floor` go to the socket as they come.
    Live { floor: u64 },
    /// The member replays: live frames wait here, in seq order.
    Replaying(Vec<(u64, F)>),
}

impl<F> Recovery<F> {
    /// `Replaying` (holding nothing yet) for a member that resumes from a
    /// cursor, else `Live`.
    pub(super) fn new(replaying: bool) -> Self {
        if replaying {
            Self::Replaying(Vec::new())
        } else {
            Self::Live { floor: 0 }
        }
    }

    /// Takes the live frame `seq`: holds it while replaying, else hands it
    /// back to be queued now.
    pub(super) fn offer(&mut self, seq: u64, frame: F) -> Option<F> {
        match self {
            Self::Live { floor } => (seq > *floor).then_some(frame),
            Self::Replaying(held) => {
                held.push((seq, frame));
                None
            }
        }
    }

    /// Ends the replay, which sent the channel's history up to
    /// `replayed_upto`: returns the held frames above it, in order, to be
    /// queued before any later live frame. Live from now on; on a member
    /// already live, returns nothing.
    pub(super) fn finish(&mut self, replayed_upto: u64) -> impl Iterator<Item = F> + use<F> {
        let held = match self {
            Self::Live { .. } => Vec::new(),
            Self::Replaying(held) => {
                let held = mem::take(held);
                *self = Self::Live {
                    floor: replayed_upto,
                };
                held
            }
        };
        held.into_iter()
            .filter(move |(seq, _)| *seq > replayed_upto)
            .map(|(_, frame)| frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame of `seq`, named so a test can tell frames apart from seqs.
    fn frame(seq: u64) -> String {
        format!("event {seq}")
    }

    #[test]
    fn a_live_member_gets_each_frame_at_once() {
        let mut recovery = Recovery::new(false);
        assert_eq!(recovery.offer(7, frame(7)), Some(frame(7)));
        assert_eq!(recovery.finish(10).count(), 0, "nothing was held");
    }

    #[test]
    fn a_replaying_member_gets_the_held_frames_above_the_replay_in_order() {
        let mut recovery = Recovery::new(true);
        for seq in [11, 12, 14, 17] {
            assert_eq!(
                recovery.offer(seq, frame(seq)),
                None,
                "held while replaying"
            );
        }
        let handed_over: Vec<String> = recovery.finish(12).collect();
        assert_eq!(handed_over, [frame(14), frame(17)]);
        assert_eq!(
            recovery.offer(18, frame(18)),
            Some(frame(18)),
            "live after the hand-over"
        );
        assert_eq!(recovery.finish(12).count(), 0, "handed over once");
        assert_eq!(
            recovery.offer(9, frame(9)),
            None,
            "never again at or below the replay, even if a repair offers it"
        );
    }

    /// The whole promise: history `(since, upto]` then the hand-over is
    /// every seq above `since` once, in order, however far the replay read
    /// past the `hw` the member joined at, and when the client's cursor is
    /// ahead of this node (the replay sends nothing, `upto` is the cursor).
    #[test]
    fn history_then_hand_over_is_every_seq_once_in_order() {
        let (joined_at, last) = (10, 20);
        for (since, upto) in (joined_at..=last)
            .map(|upto| (3, upto))
            .chain([(15, 15), (20, 20)])
        {
            let mut recovery = Recovery::new(true);
            let mut client: Vec<String> = (since + 1..=upto).map(frame).collect();
            for seq in joined_at + 1..=last {
                assert_eq!(recovery.offer(seq, frame(seq)), None);
            }
            client.extend(recovery.finish(upto));
            let expected: Vec<String> = (since + 1..=last).map(frame).collect();
            assert_eq!(client, expected, "since {since}, replayed up to {upto}");
        }
    }
}
