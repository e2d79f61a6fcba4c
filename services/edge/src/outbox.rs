//! A socket's outbound queue, bounded in bytes.
//!
//! Producers (the hub's fan-out, the session's own replies) never wait: a
//! push that would take the queue past its bound is refused and marks the
//! socket a slow consumer, which its session then closes with 4008. One
//! slow socket therefore holds at most the bound and slows nobody else.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::metrics::FrameKind;

/// One queued frame, and what its socket write reports to the metrics.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) text: Utf8Bytes,
    pub(crate) kind: FrameKind,
}

/// The sending half; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
}

/// The receiving half, owned by the session.
#[derive(Debug)]
pub(crate) struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Cancelled on the first refused push.
    overflowed: CancellationToken,
    /// Notified when written frames free room.
    room: Notify,
}

/// A queue that holds at most `max_bytes` of frames.
pub(crate) fn outbox(max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        overflowed: CancellationToken::new(),
        room: Notify::new(),
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        OutboxReceiver { rx, shared },
    )
}

// === impl Outbox ===

impl Outbox {
    /// Queues a control frame (not an event); `false` when it was refused
    /// (overflow, or the session is gone).
    pub(crate) fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_with(frame, FrameKind::Control)
    }

    /// Queues `frame` of `kind`; `false` when it was refused.
    pub(crate) fn push_with(&self, frame: Utf8Bytes, kind: FrameKind) -> bool {
        let shared = &self.shared;
        if shared.overflowed.is_cancelled() {
            return false;
        }
        let len = frame.len();
        let before = shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > shared.max_bytes {
            shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            shared.overflowed.cancel();
            return false;
        }
        self.tx.send(Queued { text: frame, kind }).is_ok()
    }

    /// Queues `frame` once the queue is at most half full, waiting for the
    /// socket to drain it; for replay, which must not overflow a socket that
    /// reads fine, and must leave room for live frames. `false` when the
    /// socket overflowed or is gone.
    pub(crate) async fn push_when_room(&self, frame: Utf8Bytes, kind: FrameKind) -> bool {
        let shared = &self.shared;
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if shared.overflowed.is_cancelled() || self.tx.is_closed() {
                return false;
            }
            if shared.queued_bytes.load(Ordering::Acquire) + frame.len() <= shared.max_bytes / 2 {
                return self.push_with(frame, kind);
            }
            tokio::select! {
                () = room => {}
                () = shared.overflowed.cancelled() => return false,
            }
        }
    }
}

// === impl OutboxReceiver ===

impl OutboxReceiver {
    /// The next frame; `None` when every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Queued> {
        self.rx.recv().await
    }

    /// A frame already queued, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Queued> {
        self.rx.try_recv().ok()
    }

    /// Gives back the room of frames that were written to the socket.
    pub(crate) fn release(&self, n_bytes: usize) {
        self.shared
            .queued_bytes
            .fetch_sub(n_bytes, Ordering::AcqRel);
        self.shared.room.notify_waiters();
    }

    /// Completes once a push has been refused.
    pub(crate) fn overflowed(&self) -> &CancellationToken {
        &self.shared.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Utf8Bytes {
        Utf8Bytes::from("x".repeat(n))
    }

    #[tokio::test]
    async fn the_bound_is_in_bytes_and_release_makes_room() {
        let (tx, mut rx) = outbox(10);
        assert!(tx.push(frame(4)));
        assert!(tx.push(frame(6)));
        let first = rx.recv().await.unwrap();
        rx.release(first.text.len());
        assert!(tx.push(frame(4)), "released room is usable again");
        assert!(!rx.overflowed().is_cancelled());
    }

    #[tokio::test]
    async fn replay_waits_for_half_the_room() {
        let (tx, mut rx) = outbox(10);
        assert!(tx.push(frame(6)));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.push_when_room(frame(4), FrameKind::Replayed).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "6 + 4 bytes is over half of 10");
        let first = rx.recv().await.unwrap();
        rx.release(first.text.len());
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn an_overflow_marks_the_socket_and_refuses_everything_after() {
        let (tx, rx) = outbox(10);
        assert!(tx.push(frame(8)));
        assert!(!tx.push(frame(3)));
        assert!(rx.overflowed().is_cancelled());
        assert!(!tx.push(frame(1)), "a slow consumer gets nothing more");
    }
}
