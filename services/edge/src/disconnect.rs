//! How a connection ends: every reason, as one value per reason, and what
//! it means on each transport (its last frame, its WebSocket close code and
//! reason, what it counts in the metrics, how long its close may take).
//!
//! The codes come from the shared error vocabulary (`ErrorCode` and its
//! `close` constants), so a client reads the same reason on both transports:
//! SSE has no close codes, so there the last frame alone says it.

use std::time::Duration;

use herald_shared::{
    error_code::{ErrorCode, close},
    frames::ServerFrame,
};

use crate::{
    admission::Refusal,
    metrics::{Metrics, Transport},
};

/// How long a closing handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The same for a slow consumer's WebSocket, whose close waits behind a full socket.
const SLOW_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The same for a WebSocket dropped in the middle of a write (token expiry,
/// silence, the write timeout): it is not reading, so its close frame would
/// not get out anyway, and its deadline has passed already.
const STUCK_CLOSE_TIMEOUT: Duration = Duration::from_millis(250);

/// Why a connection ends.
#[derive(Debug)]
pub(crate) enum Disconnect {
    /// The client closed or the connection broke: nothing more to send.
    Gone,
    /// Two heartbeats without a sign of life: the peer is gone too.
    Silent,
    /// Refused at admission (counted there, by its code).
    Refused(Refusal),
    /// The node drains: reconnect, to another node.
    Draining,
    /// The outbound queue overflowed: resume from the last seq.
    SlowConsumer,
    /// A write stayed pending for the write timeout: a slow consumer too.
    WriteTimeout,
    /// The token's `exp` passed without a refresh.
    TokenExpired,
    /// The client kept sending frames too fast.
    RateLimited,
    /// A replay could not read the history: reconnect with the same cursor.
    ReplayFailed,
    /// Joining a channel at connect failed (NATS).
    JoinFailed,
    /// A client frame over the size limit.
    FrameTooLarge,
    /// The session API ended the user's connections, or revoked the token.
    Revoked,
}

impl Disconnect {
    /// The error code the client is told, if any.
    pub(crate) fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused(refusal) => Some(refusal.code),
            Self::SlowConsumer | Self::WriteTimeout => Some(ErrorCode::SlowConsumer),
            Self::TokenExpired => Some(ErrorCode::ExpiredToken),
            Self::RateLimited => Some(ErrorCode::RateLimited),
            Self::ReplayFailed | Self::JoinFailed => Some(ErrorCode::NatsUnavailable),
            Self::Revoked => Some(ErrorCode::Revoked),
            Self::Gone | Self::Silent | Self::Draining | Self::FrameTooLarge => None,
        }
    }

    /// The WebSocket close code and reason; `None` ends without a close
    /// frame (the peer is gone).
    pub(crate) fn close(&self) -> Option<(u16, &'static str)> {
        let by_code =
            |code: ErrorCode, otherwise| (code.close_code().unwrap_or(otherwise), code.as_str());
        match self {
            Self::Gone | Self::Silent => None,
            Self::Refused(refusal) => Some(by_code(refusal.code, close::POLICY_VIOLATION)),
            Self::SlowConsumer
            | Self::WriteTimeout
            | Self::TokenExpired
            | Self::RateLimited
            | Self::Revoked => Some(by_code(self.code()?, close::INTERNAL_ERROR)),
            Self::Draining => Some((close::SERVICE_RESTART, "draining")),
            Self::ReplayFailed => Some((close::TRY_AGAIN_LATER, "replay failed")),
            Self::JoinFailed => Some((close::TRY_AGAIN_LATER, "nats unavailable")),
            Self::FrameTooLarge => Some((close::MESSAGE_TOO_BIG, "frame too large")),
        }
    }

    /// The last frame sent on `transport`, which says what to do next in
    /// that transport's terms. A WebSocket that failed to join says so by
    /// its close code alone.
    pub(crate) fn last_frame(&self, transport: Transport) -> Option<ServerFrame> {
        let sse = transport == Transport::Sse;
        let message = match self {
            Self::Gone | Self::Silent | Self::FrameTooLarge => return None,
            Self::JoinFailed if !sse => return None,
            Self::Draining => {
                return Some(ServerFrame::Reconnect {
                    reason: "draining".into(),
                });
            }
            Self::Refused(refusal) => refusal.message.clone(),
            Self::SlowConsumer | Self::WriteTimeout if sse => {
                "the stream read too slowly; reconnect with Last-Event-ID".into()
            }
            Self::SlowConsumer | Self::WriteTimeout => {
                "the socket read too slowly; resume from your last seq".into()
            }
            Self::TokenExpired if sse => "the token expired; reconnect with a fresh one".into(),
            Self::TokenExpired => {
                "the token expired; refresh it with an `auth` frame before `exp`".into()
            }
            Self::RateLimited => "too many frames, too often".into(),
            Self::ReplayFailed if sse => {
                "the history could not be read; reconnect with Last-Event-ID".into()
            }
            Self::ReplayFailed => {
                "the history could not be read; reconnect with the same cursor".into()
            }
            Self::JoinFailed => "retry".into(),
            Self::Revoked => "the session was revoked; do not reconnect with this token".into(),
        };
        Some(ServerFrame::Error {
            code: self.code()?,
            message,
            r#ref: None,
        })
    }

    /// Counts the end in the metrics: slow consumers, and expired tokens
    /// among the auth failures (refusals are counted at admission).
    pub(crate) fn count(&self, metrics: &Metrics) {
        match self {
            Self::SlowConsumer | Self::WriteTimeout => metrics.slow_consumer(),
            Self::TokenExpired => metrics.auth_failed(ErrorCode::ExpiredToken),
            _ => {}
        }
    }

    /// How long the last frame (and on a WebSocket the closing handshake)
    /// may take; shortest for a connection that was `stuck` in a write.
    /// Zero: the last frame goes only if there is room for it at once.
    pub(crate) fn close_timeout(&self, transport: Transport, stuck: bool) -> Duration {
        match (transport, stuck) {
            (Transport::Sse, true) => Duration::ZERO,
            (Transport::Sse, false) => CLOSE_TIMEOUT,
            (Transport::WebSocket, true) => STUCK_CLOSE_TIMEOUT,
            // A slow consumer's socket is full: give its close frame longer to get out.
            (Transport::WebSocket, false) if self.code() == Some(ErrorCode::SlowConsumer) => {
                SLOW_CLOSE_TIMEOUT
            }
            (Transport::WebSocket, false) => CLOSE_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_the_shared_vocabulary_s() {
        let table = [
            (Disconnect::Gone, None),
            (Disconnect::Silent, None),
            (Disconnect::Draining, Some(1012)),
            (Disconnect::SlowConsumer, Some(4008)),
            (Disconnect::WriteTimeout, Some(4008)),
            (Disconnect::TokenExpired, Some(4003)),
            (Disconnect::RateLimited, Some(4029)),
            (Disconnect::ReplayFailed, Some(1013)),
            (Disconnect::JoinFailed, Some(1013)),
            (Disconnect::FrameTooLarge, Some(1009)),
            (Disconnect::Revoked, Some(4010)),
        ];
        for (end, code) in table {
            assert_eq!(end.close().map(|(code, _)| code), code, "{end:?}");
        }
        let refused = Disconnect::Refused(Refusal {
            code: ErrorCode::ValidationFailed,
            message: "no".into(),
        });
        assert_eq!(refused.close(), Some((1008, "VALIDATION_FAILED")));
    }

    #[test]
    fn a_last_error_frame_carries_the_end_s_code() {
        for end in [
            Disconnect::SlowConsumer,
            Disconnect::TokenExpired,
            Disconnect::ReplayFailed,
            Disconnect::Revoked,
        ] {
            for transport in [Transport::WebSocket, Transport::Sse] {
                let Some(ServerFrame::Error { code, .. }) = end.last_frame(transport) else {
                    panic!("{end:?} has no error frame on {transport:?}");
                };
                assert_eq!(Some(code), end.code());
            }
        }
        assert!(
            Disconnect::JoinFailed
                .last_frame(Transport::WebSocket)
                .is_none()
        );
        assert!(Disconnect::JoinFailed.last_frame(Transport::Sse).is_some());
    }

    #[test]
    fn a_stuck_connection_gets_the_shortest_close() {
        let slow = Disconnect::SlowConsumer;
        assert_eq!(
            slow.close_timeout(Transport::WebSocket, false),
            SLOW_CLOSE_TIMEOUT
        );
        assert_eq!(
            slow.close_timeout(Transport::WebSocket, true),
            STUCK_CLOSE_TIMEOUT
        );
        assert_eq!(slow.close_timeout(Transport::Sse, true), Duration::ZERO);
        let drained = Disconnect::Draining;
        assert_eq!(
            drained.close_timeout(Transport::WebSocket, false),
            CLOSE_TIMEOUT
        );
    }
}
