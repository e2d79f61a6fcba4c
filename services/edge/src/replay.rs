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

use axum::extract::ws::Utf8Bytes;
use herald_shared::{
    channel::Channel,
    frames::{ServerFrame, encode_event_frame},
    subject::stored_subject,
};
use tokio_util::sync::CancellationToken;

use crate::{
    hub::MemberId,
    metrics::FrameKind,
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
        let Cursor { since, epoch } = &self.cursor;
        if epoch
            .as_deref()
            .is_some_and(|epoch| epoch != &*self.state.epoch)
        {
            let first_seq = reader.first_seq_from(1).await?.unwrap_or(self.upto + 1);
            self.send(ServerFrame::HistoryTruncated {
                channel: self.channel.clone(),
                first_seq,
            });
            return Ok((0, self.upto));
        }
        if *since >= self.upto {
            return Ok((0, *since));
        }
        // Retention removes from the head only (age, bytes; never per subject),
        // so the history after `since` is whole iff the first seq still stored
        // at or after `since` is at most `since + 1`.
        if let Some(first_seq) = reader.first_seq_from(*since).await?
            && first_seq > since + 1
        {
            self.send(ServerFrame::HistoryTruncated {
                channel: self.channel.clone(),
                first_seq,
            });
            return Ok((0, self.upto));
        }
        let mut n_replayed = 0;
        let mut range = Range::new(stored_subject(&self.channel).into(), *since, self.upto);
        while let Some(page) = range.next_page(reader).await? {
            for message in page {
                let Some(frame) = encode_event_frame(&self.channel, message.seq, &message.payload)
                else {
                    continue;
                };
                if !self
                    .outbox
                    .push_when_room(Utf8Bytes::from(frame), FrameKind::Replayed)
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

    fn send(&self, frame: ServerFrame) {
        if let ServerFrame::HistoryTruncated { .. } = frame {
            self.state.metrics.history_truncated();
        }
        self.outbox.push(Utf8Bytes::from(frame.to_json()));
    }
}
