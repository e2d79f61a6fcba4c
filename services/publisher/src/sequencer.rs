//! Domain messages back in stream order after a takeover.
//!
//! The domain consumer hands a window of messages to one replica at a time.
//! When that replica dies, the messages it held come back only after the ack
//! wait, while the replica that takes over may already be handed newer ones.
//! Storing those first would put an `updated` after the `deleted` that
//! followed it, so the sequencer holds a message back until every older one is
//! taken: everything below `next` is done (taken here, or acked anywhere, as
//! the consumer's ack floor tells), and a message above it waits.
//!
//! The domain stream is a work queue without a filter, so the messages above
//! the ack floor have consecutive stream seqs; a gap that never fills (a
//! message removed by age or by hand) is given up on after a bound.

use std::collections::BTreeMap;

/// Stream seqs seen so far and messages that wait for older ones.
#[derive(Debug)]
pub(crate) struct Sequencer<T> {
    /// The next stream seq to take; 0 until the ack floor is known.
    next: u64,
    waiting: BTreeMap<u64, T>,
}

impl<T> Sequencer<T> {
    pub(crate) fn new() -> Self {
        Self {
            next: 0,
            waiting: BTreeMap::new(),
        }
    }

    /// Whether a message with stream seq `seq` would have to wait: then the
    /// caller reads the consumer's ack floor first (it may have moved on
    /// while another replica was pinned).
    pub(crate) fn would_wait(&self, seq: u64) -> bool {
        seq > self.next
    }

    /// Everything at or below the consumer's ack `floor` is done; returns the
    /// messages that no longer wait, in order.
    pub(crate) fn floor(&mut self, floor: u64) -> Vec<T> {
        self.next = self.next.max(floor.saturating_add(1));
        self.release()
    }

    /// A message with stream seq `seq` was delivered; returns those that may
    /// be taken now, in order (empty if it waits). One below `next` was taken
    /// before (a redelivery: its ack was lost or late) and is returned at once;
    /// storing it again stores nothing new.
    pub(crate) fn offer(&mut self, seq: u64, message: T) -> Vec<T> {
        if seq < self.next {
            return vec![message];
        }
        // A redelivery of one that waits replaces it: the newest delivery is
        // the one JetStream expects the ack for.
        self.waiting.insert(seq, message);
        self.release()
    }

    /// The oldest waiting message's seq, if any waits.
    pub(crate) fn waiting_since(&self) -> Option<u64> {
        self.waiting.keys().next().copied()
    }

    /// Gives up waiting for the messages below the oldest waiting one: they
    /// are gone. Returns what may be taken now.
    pub(crate) fn skip_gap(&mut self) -> Vec<T> {
        if let Some(first) = self.waiting_since() {
            self.next = self.next.max(first);
        }
        self.release()
    }

    fn release(&mut self) -> Vec<T> {
        let mut ready = Vec::new();
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            ready.push(entry.remove());
            self.next += 1;
        }
        // Delivered again after being taken: nothing to wait for.
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() >= self.next {
                break;
            }
            ready.push(entry.remove());
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_messages_pass_straight_through() {
        let mut seq = Sequencer::new();
        assert!(seq.would_wait(1), "the floor is unknown at first");
        assert_eq!(seq.floor(0), Vec::<u64>::new());
        for n in 1..=5 {
            assert!(!seq.would_wait(n));
            assert_eq!(seq.offer(n, n), [n]);
        }
        assert_eq!(seq.waiting_since(), None);
    }

    #[test]
    fn newer_messages_wait_for_the_ones_a_dead_replica_held() {
        let mut seq = Sequencer::new();
        seq.floor(10);
        // 11 and 12 were with the dead replica; 13 and 14 come first.
        assert_eq!(seq.offer(13, 13), Vec::<u64>::new());
        assert_eq!(seq.offer(14, 14), Vec::<u64>::new());
        assert_eq!(seq.waiting_since(), Some(13));
        assert_eq!(seq.offer(12, 12), Vec::<u64>::new());
        assert_eq!(seq.offer(11, 11), [11, 12, 13, 14]);
        assert_eq!(seq.offer(15, 15), [15]);
    }

    #[test]
    fn a_floor_that_moved_on_while_standing_by_releases_the_waiting() {
        let mut seq = Sequencer::new();
        seq.floor(3);
        assert_eq!(seq.offer(4, 4), [4]);
        // Another replica was pinned and took 5..=99; the next message is 100.
        assert!(seq.would_wait(100));
        assert_eq!(seq.offer(100, 100), Vec::<u64>::new());
        assert_eq!(seq.floor(99), [100]);
        // The floor never moves back.
        assert_eq!(seq.floor(50), Vec::<u64>::new());
        assert!(!seq.would_wait(101));
    }

    #[test]
    fn redeliveries_of_taken_messages_are_returned_at_once() {
        let mut seq = Sequencer::new();
        seq.floor(0);
        assert_eq!(seq.offer(1, "first"), ["first"]);
        assert_eq!(seq.offer(2, "second"), ["second"]);
        assert_eq!(seq.offer(1, "first again"), ["first again"]);
    }

    #[test]
    fn a_redelivery_of_a_waiting_message_replaces_it() {
        let mut seq = Sequencer::new();
        seq.floor(0);
        assert_eq!(seq.offer(2, "old delivery"), Vec::<&str>::new());
        assert_eq!(seq.offer(2, "new delivery"), Vec::<&str>::new());
        assert_eq!(seq.offer(1, "one"), ["one", "new delivery"]);
    }

    #[test]
    fn a_gap_that_never_fills_is_skipped() {
        let mut seq = Sequencer::new();
        seq.floor(0);
        assert_eq!(seq.offer(3, 3), Vec::<u64>::new());
        assert_eq!(seq.offer(5, 5), Vec::<u64>::new());
        assert_eq!(seq.skip_gap(), [3]);
        assert_eq!(seq.waiting_since(), Some(5));
        assert_eq!(seq.skip_gap(), [5]);
        assert_eq!(seq.offer(4, 4), [4], "late, but taken");
    }
}
