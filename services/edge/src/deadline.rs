//! A connection's deadlines while a write to it is pending.
//!
//! A client that stops reading parks its session in a socket write; if the
//! session watched nothing else meanwhile, that client would escape token
//! expiry, the heartbeat silence check and every other bound, and keep what
//! the session holds for as long as it liked. [`Watch::write`] runs a write
//! against all of them, and keeps reading the client while it waits.

use std::{
    pin::Pin,
    task::Poll,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::extract::ws::{Message, WebSocket};
use futures_util::{StreamExt, stream::SplitStream};
use tokio::time::{Instant, Sleep};

/// A token `exp` further away than this counts as this far: an `Instant` plus
/// a duration of centuries overflows (and panics).
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The instant of the Unix time `exp` (seconds); an `exp` past
/// [`FAR_FUTURE`] counts as that far (a token's `exp` is anything up to
/// `u64::MAX`, and adding that to an `Instant` panics).
pub(crate) fn unix_deadline(exp: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(exp).saturating_sub(now).min(FAR_FUTURE);
    Instant::now() + left
}

/// Why a pending write was given up.
pub(crate) enum Interrupted {
    /// The write failed, or the client closed or broke the connection.
    Failed,
    /// The client sent something unreadable (or too big).
    Read(axum::Error),
    /// The stop signal: an overflow, a drain, a failed replay.
    Stop,
    Expired,
    /// Two heartbeats without a sign of life.
    Silent,
    /// The write stayed pending for the write timeout.
    TimedOut,
}

/// What a session watches while it writes, besides the stop signal and the
/// token's expiry.
pub(crate) struct Watch {
    /// The last sign of life: a frame, a ping or pong, or a write that had to
    /// wait and then went through (the peer read).
    pub(crate) last_heard: Instant,
    /// A client frame read while a write was pending, handled after it.
    pub(crate) held: Option<Message>,
    /// Silent this long (two heartbeats): the peer is gone.
    pub(crate) silence: Duration,
    pub(crate) write_timeout: Duration,
}

// === impl Watch ===

impl Watch {
    /// Runs `write` to completion unless a deadline passes first; meanwhile
    /// reads pings and pongs, and holds the first other frame for later.
    pub(crate) async fn write(
        &mut self,
        write: impl Future<Output = Result<(), axum::Error>>,
        stream: &mut SplitStream<WebSocket>,
        stop: Pin<&mut impl Future<Output = ()>>,
        expiry: Pin<&mut Sleep>,
    ) -> Result<(), Interrupted> {
        let mut write = std::pin::pin!(write);
        // Most writes complete at once: no timers for those.
        let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        if let Poll::Ready(written) = first {
            return written.map_err(|_| Interrupted::Failed);
        }
        // Boxed: the waiting is rare, and an idle session's task stays small.
        Box::pin(self.wait(write, stream, stop, expiry)).await
    }

    async fn wait(
        &mut self,
        mut write: Pin<&mut impl Future<Output = Result<(), axum::Error>>>,
        stream: &mut SplitStream<WebSocket>,
        mut stop: Pin<&mut impl Future<Output = ()>>,
        mut expiry: Pin<&mut Sleep>,
    ) -> Result<(), Interrupted> {
        let timed_out = tokio::time::sleep(self.write_timeout);
        let silent = tokio::time::sleep_until(self.last_heard + self.silence);
        tokio::pin!(timed_out, silent);
        loop {
            tokio::select! {
                biased;
                written = write.as_mut() => {
                    // The socket took bytes it could not take before: the peer reads.
                    self.last_heard = Instant::now();
                    return written.map_err(|_| Interrupted::Failed);
                }
                () = stop.as_mut() => return Err(Interrupted::Stop),
                () = expiry.as_mut() => return Err(Interrupted::Expired),
                () = &mut timed_out => return Err(Interrupted::TimedOut),
                () = &mut silent => return Err(Interrupted::Silent),
                incoming = stream.next(), if self.held.is_none() => {
                    match incoming {
                        Some(Ok(Message::Close(_))) | None => return Err(Interrupted::Failed),
                        Some(Err(err)) => return Err(Interrupted::Read(err)),
                        Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                            self.held = Some(message);
                        }
                        Some(Ok(_)) => {}
                    }
                    self.last_heard = Instant::now();
                    silent.as_mut().reset(self.last_heard + self.silence);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_exp_has_a_deadline_and_a_far_one_saturates() {
        let now = Instant::now();
        assert!(unix_deadline(0) <= Instant::now(), "a past exp is due now");
        let far = unix_deadline(u64::MAX);
        assert!(far >= now + FAR_FUTURE - Duration::from_secs(1));
        assert!(far <= Instant::now() + FAR_FUTURE);
    }
}
