//! What a queued frame is besides its bytes, known where it is built so no
//! transport parses its JSON again: its kind and seq, which its socket write
//! reports to the metrics (a delivery, and a live one's latency since it was
//! stored, read from its `Nats-Time-Stamp`), and the channel it is of.

use std::time::SystemTime;

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Which of its connection's channels a frame is of: the channel's place in
/// join order (the channels a connection starts with come first, in their
/// order). One integer per queued frame, where the channel's name would
/// cost a clone per member per frame.
pub(crate) type Slot = u32;

/// What a queued frame is, for what its socket write reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// Not an event: `welcome`, `pong`, `error`, …
    #[default]
    Control,
    /// An event read from the stream's history by a replay: a delivery, but
    /// its age is not a delivery latency.
    Replayed { seq: u64 },
    /// A live event, or a gap repair of one; `stored_at` is its
    /// `Nats-Time-Stamp`, the start of its delivery latency.
    Live {
        seq: u64,
        stored_at: Option<SystemTime>,
    },
}

impl FrameKind {
    /// The event's seq in its channel; `None` for a control frame.
    pub(crate) fn seq(self) -> Option<u64> {
        match self {
            Self::Control => None,
            Self::Replayed { seq } | Self::Live { seq, .. } => Some(seq),
        }
    }
}

/// Parses a `Nats-Time-Stamp` header value (RFC 3339 with nanoseconds, UTC),
/// as JetStream stamps stored, republished and directly read messages.
pub(crate) fn parse_time_stamp(value: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(value, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_time_stamps_parse_with_nanoseconds() {
        let parsed = parse_time_stamp("2026-11-26T10:00:00.123456789Z").unwrap();
        let since_epoch = parsed.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(since_epoch.subsec_nanos(), 123_456_789);
        assert_eq!(since_epoch.as_secs(), 1_795_687_200);
        assert_eq!(parse_time_stamp("yesterday"), None);
    }
}
