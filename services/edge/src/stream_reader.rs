//! Stateless reads of the notification stream through direct get (nats-server
//! 2.11+): a channel's messages in a seq range (batch direct get, paged), the
//! last seq of many channels at once (`multi_last`), and the first stored seq
//! from a point (to tell a truncated history).
//!
//! async-nats 0.51 has no batch direct get, so these are small request helpers
//! over core NATS: the request goes out with a fresh inbox as its reply
//! subject and the replies are read until the end-of-batch marker (`204 EOB`).
//! No consumer is created, so nothing is held on the server per client.
//!
//! Every page is bounded in bytes as well as in messages (`max_bytes`): the
//! server answers a batch inline, as fast as it can read its store, and what
//! the edge has not read yet counts against the connection's `max_pending`
//! (64 MiB by default) past which the server cuts it off. The edge reads
//! history on a NATS connection of its own, so even that would not cut live
//! delivery. Requests take turns (`--replay-concurrency` at once), so what
//! is in flight stays a few MiB whatever the number of replays and repairs.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_nats::header::{NATS_LAST_SEQUENCE, NATS_SEQUENCE, NATS_SUBJECT, NATS_TIME_STAMP};
use bytes::Bytes;
use futures_util::StreamExt;
use herald_shared::{
    stream::NOTIFY_STREAM,
    subject::{NOTIFY_SUBJECTS, direct_get_subject},
};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::frame::parse_time_stamp;

/// Messages per batch request (a page is also bounded in bytes).
const PAGE_SIZE: usize = 256;
/// Subjects per `multi_last` request: nats-server refuses more than 1024, and
/// each answer is a whole notification (up to 64 KiB), so fewer keep one
/// answer to a few MiB.
const MULTI_LAST_SUBJECTS: usize = 64;
/// How long one reply may take; also bounds handing the request to the
/// client (which waits while it reconnects).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const NUM_PENDING: &str = "Nats-Num-Pending";
/// How often a page that came back with a hole is asked for again.
const PAGE_ATTEMPTS: u32 = 3;

/// One stored notification.
#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    pub(crate) seq: u64,
    pub(crate) subject: String,
    pub(crate) payload: Bytes,
    /// When JetStream stored it (`Nats-Time-Stamp`).
    pub(crate) stored_at: Option<SystemTime>,
}

/// Reading the stream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("request failed: {0}")]
    Nats(#[from] async_nats::Error),
    #[error("no reply within {REPLY_TIMEOUT:?}")]
    TimedOut,
    #[error("direct get answered {status}: {description}")]
    Status { status: u16, description: String },
    #[error("a reply without Nats-Sequence or Nats-Subject")]
    Malformed,
    /// Replies of one batch went missing: the connection was cut off and
    /// came back mid-batch, so the rest (and the end-of-batch) arrived on
    /// the new one.
    #[error(
        "a batch arrived with a hole: after seq {after}, seq {next} said its previous was {previous}"
    )]
    Incomplete {
        after: u64,
        previous: u64,
        next: u64,
    },
}

/// Reads the notification stream; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct StreamReader {
    nats: async_nats::Client,
    api_subject: String,
    /// `max_bytes` of a page.
    page_bytes: usize,
    /// Turns at reading: every request holds one until its last reply, so
    /// at most this many are in flight on the connection, each bounded in
    /// bytes. Handed out in arrival order (tokio's semaphore is fair), so
    /// replays of many sockets advance a page each in turn, and a gap
    /// repair waits behind at most one page per turn.
    turns: Arc<Semaphore>,
}

/// Walks one subject's messages in `(after, upto]`, a page at a time.
#[derive(Debug)]
pub(crate) struct Range {
    subject: String,
    next: u64,
    upto: u64,
    done: bool,
}

// === impl StreamReader ===

impl StreamReader {
    /// Reads over `nats`, at most `page_bytes` per page (but at least one
    /// message), at most `concurrency` requests at once.
    pub(crate) fn new(nats: async_nats::Client, page_bytes: usize, concurrency: usize) -> Self {
        Self {
            nats,
            api_subject: direct_get_subject(NOTIFY_STREAM).into(),
            page_bytes,
            turns: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// The last stored seq of each subject that has one.
    pub(crate) async fn last_seqs(
        &self,
        subjects: &[String],
    ) -> Result<HashMap<String, u64>, ReadError> {
        let mut lasts = HashMap::with_capacity(subjects.len());
        for chunk in subjects.chunks(MULTI_LAST_SUBJECTS) {
            let request = json!({ "multi_last": chunk, "batch": chunk.len() });
            let (messages, _) = self.batch(&request).await?;
            lasts.extend(messages.into_iter().map(|m| (m.subject, m.seq)));
        }
        Ok(lasts)
    }

    /// The first seq stored at or after `seq` on any channel; `None` when the
    /// stream holds nothing from there on.
    pub(crate) async fn first_seq_from(&self, seq: u64) -> Result<Option<u64>, ReadError> {
        let request = json!({ "seq": seq.max(1), "batch": 1, "next_by_subj": NOTIFY_SUBJECTS });
        let (messages, _) = self.batch(&request).await?;
        Ok(messages.first().map(|m| m.seq))
    }

    /// The stream's last seq (0 when it never stored anything). Through the
    /// JetStream API, not direct get: for the rare cursor past everything the
    /// stream still holds.
    pub(crate) async fn last_seq(&self) -> Result<u64, ReadError> {
        let jetstream = async_nats::jetstream::new(self.nats.clone());
        let info = async {
            let stream = jetstream.get_stream(NOTIFY_STREAM).await?;
            Ok::<_, async_nats::Error>(stream.cached_info().state.last_sequence)
        };
        tokio::time::timeout(REPLY_TIMEOUT, info)
            .await
            .map_err(|_| ReadError::TimedOut)?
            .map_err(ReadError::Nats)
    }

    /// One batch request: the messages, and whether more match after them.
    /// Every await is bounded: a read either answers or fails.
    async fn batch(
        &self,
        request: &serde_json::Value,
    ) -> Result<(Vec<StoredMessage>, bool), ReadError> {
        let _turn = self
            .turns
            .acquire()
            .await
            .expect("the read semaphore is never closed");
        let inbox = self.nats.new_inbox();
        let mut replies = tokio::time::timeout(REPLY_TIMEOUT, self.nats.subscribe(inbox.clone()))
            .await
            .map_err(|_| ReadError::TimedOut)?
            .map_err(|e| ReadError::Nats(e.into()))?;
        let body = serde_json::to_vec(request).expect("a JSON request").into();
        let publish = self
            .nats
            .publish_with_reply(self.api_subject.clone(), inbox, body);
        tokio::time::timeout(REPLY_TIMEOUT, publish)
            .await
            .map_err(|_| ReadError::TimedOut)?
            .map_err(|e| ReadError::Nats(e.into()))?;
        let mut messages: Vec<StoredMessage> = Vec::new();
        loop {
            let reply = tokio::time::timeout(REPLY_TIMEOUT, replies.next())
                .await
                .map_err(|_| ReadError::TimedOut)?
                .ok_or(ReadError::TimedOut)?;
            let header = |name: &str| {
                reply
                    .headers
                    .as_ref()
                    .and_then(|h| h.get_last(name))
                    .map(|v| v.to_string())
            };
            match reply.status.map(|s| s.as_u16()) {
                // End of batch; Nats-Num-Pending counts what matched but did not fit.
                Some(204) => {
                    let previous = header(NATS_LAST_SEQUENCE.as_ref()).and_then(|v| v.parse().ok());
                    follows_on(messages.last().map_or(0, |m| m.seq), previous, 0)?;
                    let pending = header(NUM_PENDING)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                    return Ok((messages, pending > 0));
                }
                // Nothing matched at all (also for batch requests: no EOB follows).
                Some(404) => return Ok((messages, false)),
                Some(status) => {
                    let description = reply.description.clone().unwrap_or_default();
                    return Err(ReadError::Status {
                        status,
                        description,
                    });
                }
                None => {
                    let seq = header(NATS_SEQUENCE.as_ref()).and_then(|v| v.parse().ok());
                    let subject = header(NATS_SUBJECT.as_ref());
                    let (Some(seq), Some(subject)) = (seq, subject) else {
                        return Err(ReadError::Malformed);
                    };
                    // A server older than 2.11 ignores `batch` and sends one message without
                    // Nats-Num-Pending and no EOB: take it as a page of one.
                    let batched = header(NUM_PENDING).is_some();
                    if batched {
                        let previous =
                            header(NATS_LAST_SEQUENCE.as_ref()).and_then(|v| v.parse().ok());
                        follows_on(messages.last().map_or(0, |m| m.seq), previous, seq)?;
                    }
                    let stored_at = header(NATS_TIME_STAMP.as_ref())
                        .as_deref()
                        .and_then(parse_time_stamp);
                    messages.push(StoredMessage {
                        seq,
                        subject,
                        payload: reply.payload,
                        stored_at,
                    });
                    if !batched {
                        return Ok((messages, true));
                    }
                }
            }
        }
    }
}

/// In a batch every reply's `Nats-Last-Sequence` is the seq of the reply
/// before it (0 for the first), and the end-of-batch's is the last one's: a
/// reply (`next`, 0 for the end-of-batch) whose `previous` is not the seq
/// received last (`after`, 0 for none) means replies were lost.
fn follows_on(after: u64, previous: Option<u64>, next: u64) -> Result<(), ReadError> {
    match previous {
        Some(previous) if previous != after => Err(ReadError::Incomplete {
            after,
            previous,
            next,
        }),
        _ => Ok(()),
    }
}

// === impl Range ===

impl Range {
    /// `subject`'s messages with a seq in `(after, upto]`.
    pub(crate) fn new(subject: String, after: u64, upto: u64) -> Self {
        Self {
            subject,
            next: after + 1,
            upto,
            done: after >= upto,
        }
    }

    /// The next page in seq order; `None` once the range is exhausted.
    pub(crate) async fn next_page(
        &mut self,
        reader: &StreamReader,
    ) -> Result<Option<Vec<StoredMessage>>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let request = json!({
            "seq": self.next,
            "batch": PAGE_SIZE,
            "max_bytes": reader.page_bytes,
            "next_by_subj": self.subject,
        });
        let mut attempt = 1;
        let (mut page, more) = loop {
            match reader.batch(&request).await {
                Err(err @ ReadError::Incomplete { .. }) if attempt < PAGE_ATTEMPTS => {
                    tracing::debug!(error = %err, attempt, "Page read with a hole; reading it again.");
                    attempt += 1;
                }
                read => break read?,
            }
        };
        if page.is_empty() && more {
            // One notification larger than a page: read it alone.
            let request = json!({ "seq": self.next, "batch": 1, "next_by_subj": self.subject });
            page = reader.batch(&request).await?.0;
        }
        if let Some(last) = page.last() {
            self.next = last.seq + 1;
        }
        page.retain(|m| m.seq <= self.upto);
        // Done once past `upto` or when nothing more is found, never on the
        // batch's word alone: under a storm a page came back cut short with
        // nothing said to be pending, and the replay ended there, silently
        // skipping the rest (the stall of issue 10, item 9).
        self.done = self.next > self.upto || page.is_empty();
        Ok(if page.is_empty() { None } else { Some(page) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reply_must_follow_on_from_the_one_received_before() {
        assert!(follows_on(0, Some(0), 5).is_ok(), "the first reply");
        assert!(follows_on(5, Some(5), 9).is_ok());
        assert!(follows_on(9, Some(9), 0).is_ok(), "the end-of-batch");
        assert!(
            follows_on(5, None, 9).is_ok(),
            "no header: nothing to check"
        );
        assert!(matches!(
            follows_on(27, Some(40), 0),
            Err(ReadError::Incomplete {
                after: 27,
                previous: 40,
                next: 0
            })
        ));
        assert!(
            follows_on(0, Some(3), 7).is_err(),
            "the first replies went missing"
        );
    }
}
