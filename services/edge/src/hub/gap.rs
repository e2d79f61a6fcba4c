//! When a channel's forwarder must repair: what a live message, or the
//! stream's last seq, says about the seqs this node has not delivered.
//!
//! RePublish is at-most-once, so live copies can go missing. Each live copy
//! names the previous seq stored on its channel (`Nats-Last-Sequence`): if
//! that is above `hw`, the seqs in `(hw, previous]` were lost and are read
//! from the stream before the copy is delivered. A lost *last* message has
//! no later copy to reveal it; a reconcile pass reads the stream's last seq
//! instead. Pure decisions over seqs, so they are tested without NATS.

/// Seqs of a channel this node has not delivered: `(after, upto]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gap {
    pub(super) after: u64,
    pub(super) upto: u64,
}

/// What to do with a live copy, given the channel's `hw`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Live {
    /// At or below `hw`: a repair delivered it already.
    Stale,
    /// The next one: deliver it.
    Next,
    /// Deliver it after repairing the gap before it.
    AfterGap(Gap),
}

// === impl Live ===

impl Live {
    /// The live copy of `seq`, whose channel's previous stored seq is
    /// `previous` (0 when the header is missing: nothing to repair).
    pub(super) fn classify(hw: u64, seq: u64, previous: u64) -> Self {
        if seq <= hw {
            Self::Stale
        } else if previous > hw {
            Self::AfterGap(Gap {
                after: hw,
                upto: previous,
            })
        } else {
            Self::Next
        }
    }
}

// === impl Gap ===

impl Gap {
    /// What a reconcile pass found: the channel's last stored seq is `last`.
    pub(super) fn upto_last(hw: u64, last: u64) -> Option<Self> {
        (last > hw).then_some(Self {
            after: hw,
            upto: last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_at_or_below_hw_is_stale_whatever_its_previous() {
        assert_eq!(Live::classify(10, 10, 9), Live::Stale);
        assert_eq!(Live::classify(10, 7, 12), Live::Stale);
    }

    #[test]
    fn a_copy_whose_previous_is_hw_or_below_is_next() {
        assert_eq!(Live::classify(10, 15, 10), Live::Next);
        assert_eq!(Live::classify(10, 11, 0), Live::Next, "no header");
        // Seqs are shared by all channels: a jump in numbers is no gap.
        assert_eq!(Live::classify(10, 99, 4), Live::Next);
    }

    #[test]
    fn a_copy_whose_previous_is_above_hw_needs_hw_to_previous_repaired_first() {
        assert_eq!(
            Live::classify(10, 20, 14),
            Live::AfterGap(Gap {
                after: 10,
                upto: 14
            })
        );
        assert_eq!(
            Live::classify(10, 12, 11),
            Live::AfterGap(Gap {
                after: 10,
                upto: 11
            }),
            "a single lost seq"
        );
    }

    #[test]
    fn reconcile_repairs_only_when_the_stream_is_ahead() {
        assert_eq!(Gap::upto_last(10, 10), None);
        assert_eq!(Gap::upto_last(10, 3), None);
        assert_eq!(
            Gap::upto_last(10, 13),
            Some(Gap {
                after: 10,
                upto: 13
            })
        );
    }
}
