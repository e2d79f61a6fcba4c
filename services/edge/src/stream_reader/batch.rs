//! One batch direct get on the history connection: the request with a fresh
//! inbox, the replies read until the end-of-batch, each checked to follow on
//! from the one before (a reply lost to a reconnect is a hole, never a short
//! page), every await bounded.

use async_nats::header::{NATS_LAST_SEQUENCE, NATS_SEQUENCE, NATS_SUBJECT, NATS_TIME_STAMP};
use futures_util::StreamExt;
use herald_shared::direct_get;

use super::{NUM_PENDING, REPLY_TIMEOUT, ReadError, StoredMessage, StreamReader, UP_TO_SEQUENCE};
use crate::frame::parse_time_stamp;

/// One batch's answer.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) messages: Vec<StoredMessage>,
    /// More matched than fit.
    pub(super) more: bool,
    /// `multi_last` only: the responder's last seq.
    pub(super) up_to: Option<u64>,
}

impl StreamReader {
    /// One batch request: the messages, and whether more match after them.
    /// Every await is bounded: a read either answers or fails. A request no
    /// replica was there to answer (an election, a restart, a catch-up) is
    /// made again a few times first.
    pub(super) async fn batch(&self, request: &serde_json::Value) -> Result<Batch, ReadError> {
        direct_get::until_answered(
            || self.batch_once(request),
            |err| matches!(err, ReadError::Status { status, .. } if *status == direct_get::NO_RESPONDERS),
        )
        .await
    }

    /// One attempt at [`Self::batch`], holding a turn at reading throughout.
    async fn batch_once(&self, request: &serde_json::Value) -> Result<Batch, ReadError> {
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
                    if let Some(last) = messages.iter().max_by_key(|m| m.seq) {
                        self.saw(last.seq, &last.subject);
                    }
                    return Ok(Batch {
                        messages,
                        more: pending > 0,
                        up_to: header(UP_TO_SEQUENCE).and_then(|v| v.parse().ok()),
                    });
                }
                // Nothing matched at all (also for batch requests: no EOB follows).
                Some(404) => {
                    return Ok(Batch {
                        messages,
                        ..Batch::default()
                    });
                }
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
                        return Ok(Batch {
                            messages,
                            more: true,
                            up_to: None,
                        });
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
