//! A socket's outbound queue, bounded in bytes.
//!
//! Producers (the hub's fan-out, the session's own replies) never wait: a
//! push that would take the queue past its bound is refused and marks the
//! socket a slow consumer, which its session then closes with 4008. One
//! slow socket therefore holds at most the bound and slows nobody else.
//!
//! A `VecDeque` behind a mutex rather than a channel: an idle socket's queue
//! allocates nothing (a tokio channel allocates a 32-slot block and a padded
//! header up front, about 2 KiB per socket).

use std::{
    collections::VecDeque,
    future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::Poll,
};

use axum::extract::ws::Utf8Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::frame::{FrameKind, Slot};

/// One queued frame, what its socket write reports to the metrics, and
/// which channel it is of.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) text: Utf8Bytes,
    pub(crate) kind: FrameKind,
    /// Set when pushed through a channel's handle ([`Outbox::for_channel`]).
    pub(crate) channel: Option<Slot>,
}

/// The sending half; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    /// The channel every frame pushed through this handle is of.
    channel: Option<Slot>,
}

/// The receiving half, owned by the session.
#[derive(Debug)]
pub(crate) struct OutboxReceiver {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<Queued>>,
    /// The session waiting for a frame.
    waker: AtomicWaker,
    /// Set when the receiver is dropped: pushes are refused.
    closed: AtomicBool,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Set on the first refused push: read on every push, where the token's
    /// lock would cost more than the push itself.
    overflowed_flag: AtomicBool,
    /// Cancelled on the first refused push, for whoever waits on it.
    overflowed: CancellationToken,
    /// Notified when written frames free room.
    room: Notify,
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.queue.lock().expect("outbox lock").clear();
        // A replay waiting for room gives up.
        self.shared.room.notify_waiters();
    }
}

/// A queue that holds at most `max_bytes` of frames; a refused push cancels
/// `on_overflow` (which may also be cancelled for other reasons: the session's
/// stop signal).
pub(crate) fn outbox(max_bytes: usize, on_overflow: CancellationToken) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        waker: AtomicWaker::new(),
        closed: AtomicBool::new(false),
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        overflowed_flag: AtomicBool::new(false),
        overflowed: on_overflow,
        room: Notify::new(),
    });
    (
        Outbox {
            shared: shared.clone(),
            channel: None,
        },
        OutboxReceiver { shared },
    )
}

// === impl Outbox ===

impl Outbox {
    /// A handle to the same queue that tags its frames with `channel`: one
    /// per joined channel, given to the hub and the channel's replay.
    pub(crate) fn for_channel(&self, channel: Slot) -> Self {
        Self {
            shared: self.shared.clone(),
            channel: Some(channel),
        }
    }

    /// Queues a control frame (not an event); `false` when it was refused
    /// (overflow, or the session is gone).
    pub(crate) fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_with(frame, FrameKind::Control)
    }

    /// Queues `frame` of `kind`; `false` when it was refused.
    pub(crate) fn push_with(&self, frame: Utf8Bytes, kind: FrameKind) -> bool {
        let shared = &self.shared;
        if shared.overflowed_flag.load(Ordering::Acquire) || shared.closed.load(Ordering::Acquire) {
            return false;
        }
        let len = frame.len();
        let before = shared.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > shared.max_bytes {
            shared.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            shared.overflowed_flag.store(true, Ordering::Release);
            shared.overflowed.cancel();
            return false;
        }
        shared.queue.lock().expect("outbox lock").push_back(Queued {
            text: frame,
            kind,
            channel: self.channel,
        });
        shared.waker.wake();
        true
    }

    /// Queues `frame` once the queue is at most half full, waiting for the
    /// socket to drain it; for replay, which must not overflow a socket that
    /// reads fine, and must leave room for live frames. An empty queue always
    /// takes it (a frame over half the bound would otherwise wait for ever;
    /// one over the whole bound overflows, as it would live). `false` when
    /// the socket overflowed or is gone.
    pub(crate) async fn push_when_room(&self, frame: Utf8Bytes, kind: FrameKind) -> bool {
        let shared = &self.shared;
        loop {
            let room = shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if shared.overflowed_flag.load(Ordering::Acquire)
                || shared.closed.load(Ordering::Acquire)
            {
                return false;
            }
            let queued = shared.queued_bytes.load(Ordering::Acquire);
            if queued == 0 || queued + frame.len() <= shared.max_bytes / 2 {
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
    /// The next frame. `Option` for `select!` patterns; the session holds a
    /// sender of its own, so there always is one to wait for.
    pub(crate) async fn recv(&mut self) -> Option<Queued> {
        future::poll_fn(|cx| {
            if let Some(frame) = self.try_recv() {
                return Poll::Ready(Some(frame));
            }
            self.shared.waker.register(cx.waker());
            // A push between the check and the registration woke nobody.
            self.try_recv()
                .map_or(Poll::Pending, |frame| Poll::Ready(Some(frame)))
        })
        .await
    }

    /// A frame already queued, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Queued> {
        let mut queue = self.shared.queue.lock().expect("outbox lock");
        let frame = queue.pop_front();
        // After a burst, give the memory back rather than keep it per socket.
        if queue.is_empty() && queue.capacity() > 64 {
            queue.shrink_to_fit();
        }
        frame
    }

    /// Gives back the room of frames that were written to the socket.
    pub(crate) fn release(&self, n_bytes: usize) {
        self.shared
            .queued_bytes
            .fetch_sub(n_bytes, Ordering::AcqRel);
        self.shared.room.notify_waiters();
    }

    /// Cancelled once a push has been refused (or for whatever else cancels
    /// the token given to `outbox`).
    pub(crate) fn overflowed(&self) -> &CancellationToken {
        &self.shared.overflowed
    }

    /// Whether a push has been refused.
    pub(crate) fn has_overflowed(&self) -> bool {
        self.shared.overflowed_flag.load(Ordering::Acquire)
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
        let (tx, mut rx) = outbox(10, CancellationToken::new());
        assert!(tx.push(frame(4)));
        assert!(tx.push(frame(6)));
        let first = rx.recv().await.unwrap();
        rx.release(first.text.len());
        assert!(tx.push(frame(4)), "released room is usable again");
        assert!(!rx.overflowed().is_cancelled());
    }

    #[tokio::test]
    async fn a_channel_s_handle_tags_its_frames_and_shares_the_queue() {
        let (tx, mut rx) = outbox(100, CancellationToken::new());
        let channel = tx.for_channel(3);
        assert!(channel.push_with(
            frame(4),
            FrameKind::Live {
                seq: 9,
                stored_at: None
            }
        ));
        assert!(tx.push(frame(4)));
        let event = rx.try_recv().unwrap();
        assert_eq!((event.channel, event.kind.seq()), (Some(3), Some(9)));
        let control = rx.try_recv().unwrap();
        assert_eq!((control.channel, control.kind.seq()), (None, None));
    }

    #[tokio::test]
    async fn replay_waits_for_half_the_room() {
        let (tx, mut rx) = outbox(10, CancellationToken::new());
        assert!(tx.push(frame(6)));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move {
                tx.push_when_room(frame(4), FrameKind::Replayed { seq: 1 })
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "6 + 4 bytes is over half of 10");
        let first = rx.recv().await.unwrap();
        rx.release(first.text.len());
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn replay_of_a_frame_over_half_the_room_waits_only_for_an_empty_queue() {
        let (tx, mut rx) = outbox(10, CancellationToken::new());
        assert!(tx.push(frame(1)));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move {
                tx.push_when_room(frame(7), FrameKind::Replayed { seq: 1 })
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "1 + 7 bytes is over half of 10");
        let first = rx.recv().await.unwrap();
        rx.release(first.text.len());
        assert!(waiting.await.unwrap(), "7 bytes fit an empty queue of 10");
    }

    #[tokio::test]
    async fn an_overflow_marks_the_socket_and_refuses_everything_after() {
        let (tx, rx) = outbox(10, CancellationToken::new());
        assert!(tx.push(frame(8)));
        assert!(!tx.push(frame(3)));
        assert!(rx.overflowed().is_cancelled() && rx.has_overflowed());
        assert!(!tx.push(frame(1)), "a slow consumer gets nothing more");
    }
}
