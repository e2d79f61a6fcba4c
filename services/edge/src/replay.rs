//! Resuming one channel from a client's cursor.
//!
//! The member joined the channel as `replaying`, so the hub holds its live
//! frames; this replays the stored notifications in `(since, upto]` in seq
//! order (`upto` is the channel's `hw` when the member joined), then asks the
//! hub to queue the held frames above `upto`. Across the switch nothing is
//! lost (everything above `upto` was held) and nothing is sent twice
//! (everything at or below it is dropped from the held frames).
//!
//! If the cursor is of another epoch, or older than what the stream still
//! holds, the client gets `history_truncated` instead and live delivery goes
//! on. If the stream cannot be read, the session is ended so the client
//! reconnects with the same cursor: switching to live would silently skip.
//!
//! Bounded: a page is at most `--replay-page-bytes` (one notification at
//! least), and each page read waits its turn among at most
//! `--replay-concurrency` reads node-wide (`StreamReader`, first come first
//! served, a turn per page so every resuming socket advances). A page is
//! queued on the socket only as fast as the socket drains it. A replay
//! ends in one of three ways: it finishes (and hands over to live), it fails
//! (the session ends with an error frame and a close), or its socket stops
//! wanting it (`Replays::stop`, the socket's end).

use std::{collections::HashMap, time::Duration};

use axum::extract::ws::Utf8Bytes;
use herald_shared::{
    channel::Channel,
    frames::{ServerFrame, encode_event_frame},
    subject::stored_subject,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    frame::FrameKind,
    hub::MemberId,
    outbox::Outbox,
    state::AppState,
    stream_reader::{Range, ReadError},
};

/// Where a client resumes a channel from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The last seq the client processed on the channel.
    pub(crate) since: u64,
    /// The epoch the cursor was read under; `None` trusts the current one.
    pub(crate) epoch: Option<String>,
}

impl Cursor {
    /// Whether the cursor counts under `epoch`, the stream's current one: the
    /// one epoch rule. A seq of another epoch means nothing here (the
    /// stream was recreated); a cursor without an epoch trusts the current one.
    pub(crate) fn is_of(&self, epoch: &str) -> bool {
        self.epoch.as_deref().is_none_or(|own| own == epoch)
    }
}

/// How long stopping a replay may wait for its task to let go.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// One channel's replay for one socket.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) state: AppState,
    pub(crate) channel: Channel,
    pub(crate) member: MemberId,
    pub(crate) outbox: Outbox,
    pub(crate) cursor: Cursor,
    pub(crate) upto: u64,
    /// Cancelled when the replay cannot finish: the session must end.
    pub(crate) failed: CancellationToken,
}

impl Replay {
    pub(crate) async fn run(self) {
        let _running = self.state.metrics.replay_started();
        // A panic must not leave the member's live frames held for ever
        // with the client none the wiser: end the session instead.
        let _fail_on_panic = FailOnPanic(&self.failed);
        match self.send_history().await {
            Ok((n_replayed, live_after)) => {
                tracing::debug!(channel = %self.channel, since = self.cursor.since, upto = self.upto, n_replayed, "Replayed.");
                self.state.metrics.replay_finished(n_replayed);
                self.state
                    .hub
                    .finish_replay(&self.channel, self.member, live_after);
            }
            Err(err) => {
                tracing::warn!(channel = %self.channel, error = %err, "Replay failed; ending the session.");
                self.failed.cancel();
            }
        }
    }

    /// Queues the history, or `history_truncated`. Returns the number of
    /// events replayed and the seq above which held live frames are new to the
    /// client: `upto`, or the client's own cursor if that is further on (a
    /// node that lags behind the client must not send it anything twice).
    async fn send_history(&self) -> Result<(u64, u64), ReadError> {
        let reader = self.state.hub.reader();
        let since = self.cursor.since;
        if !self.cursor.is_of(&self.state.epoch) {
            let first_seq = reader.first_seq_from(1).await?;
            self.send(ServerFrame::HistoryTruncated {
                channel: self.channel.clone(),
                first_seq: first_seq.unwrap_or(self.upto + 1),
            });
            return Ok((0, self.upto));
        }
        // A channel whose last stored seq is at or below the cursor has lost
        // nothing after it. Otherwise, and also when the channel has nothing
        // stored at all (its `upto` reads 0: retention may have removed all
        // of it), the cursor is checked against what the stream still holds.
        let up_to_date = self.upto > 0 && since >= self.upto;
        if !up_to_date && let Some(first_seq) = self.truncated_after(since).await? {
            self.send(ServerFrame::HistoryTruncated {
                channel: self.channel.clone(),
                first_seq,
            });
            return Ok((0, self.upto));
        }
        if since >= self.upto {
            return Ok((0, since));
        }
        let mut n_replayed = 0;
        let mut range = Range::new(stored_subject(&self.channel).into(), since, self.upto);
        // Each page read takes a turn at the reader and gives it back before
        // the page is queued on the socket, which may take a while.
        while let Some(page) = range.next_page(reader).await? {
            for message in page {
                let Some(frame) = encode_event_frame(&self.channel, message.seq, &message.payload)
                else {
                    continue;
                };
                if !self
                    .outbox
                    .push_when_room(
                        Utf8Bytes::from(frame),
                        FrameKind::Replayed { seq: message.seq },
                    )
                    .await
                {
                    // The socket is gone or cut off; it resumes again later.
                    return Ok((n_replayed, self.upto));
                }
                n_replayed += 1;
            }
        }
        Ok((n_replayed, self.upto))
    }

    /// `Some(first_seq)` when notifications after `since` are gone:
    /// retention removes from the head of the stream only (age, bytes; never
    /// per subject), so what comes after `since` is whole iff the first seq
    /// the stream still holds at or after `since` is at most `since + 1`,
    /// whichever channel it belongs to. Nothing held from `since` on at all:
    /// whole iff the stream never went past `since`.
    async fn truncated_after(&self, since: u64) -> Result<Option<u64>, ReadError> {
        let reader = self.state.hub.reader();
        match reader.first_seq_from(since).await? {
            Some(first_seq) => Ok((first_seq > since + 1).then_some(first_seq)),
            None => {
                let last_seq = reader.last_seq().await?;
                Ok((since < last_seq).then_some(last_seq + 1))
            }
        }
    }

    fn send(&self, frame: ServerFrame) {
        if let ServerFrame::HistoryTruncated { .. } = frame {
            self.state.metrics.history_truncated();
        }
        self.outbox.push(Utf8Bytes::from(frame.to_json()));
    }
}

/// Cancels the session's failure token if dropped while panicking.
struct FailOnPanic<'a>(&'a CancellationToken);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.cancel();
        }
    }
}

/// One socket's replays: at most one per channel, forgotten once finished,
/// stopped when the socket leaves the channel, all aborted when it closes.
#[derive(Debug, Default)]
pub(crate) struct Replays {
    running: HashMap<Channel, JoinHandle<()>>,
}

impl Replays {
    /// Runs `replay` alongside the session's writes.
    pub(crate) fn start(&mut self, replay: Replay) {
        // Forget the finished ones: what is kept is bounded by the channels.
        self.running.retain(|_, task| !task.is_finished());
        let channel = replay.channel.clone();
        let task = tokio::spawn(replay.run().in_current_span());
        if let Some(previous) = self.running.insert(channel, task) {
            previous.abort();
        }
    }

    /// Stops `channel`'s replay and returns once it can queue nothing more,
    /// so a frame queued next (`unsubscribed`) comes after its last event.
    pub(crate) async fn stop(&mut self, channel: &Channel) {
        if let Some(task) = self.running.remove(channel) {
            task.abort();
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                tracing::warn!(%channel, "A stopped replay did not end in time.");
            }
        }
    }

    /// Stops `channel`'s replay without waiting for it.
    pub(crate) fn abort(&mut self, channel: &Channel) {
        if let Some(task) = self.running.remove(channel) {
            task.abort();
        }
    }
}

impl Drop for Replays {
    fn drop(&mut self) {
        for task in self.running.values() {
            task.abort();
        }
    }
}
