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
//!
//! On a replicated stream every replica answers direct gets, followers
//! included, and a follower may be behind the leader. No read may come up
//! short or go back in time for that (docs/delivery.md, "Reads on a
//! cluster"): a range `(after, upto]` must end at `upto` (a seq stored on
//! that very subject), a `multi_last` must come from a responder whose last
//! seq (`Nats-UpTo-Sequence`) is at least the highest seq this node has seen
//! stored, and "nothing stored from here on" is confirmed by the stream
//! leader. A responder behind is asked again after a short pause, a few
//! times, and then the read fails as any failed read does.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use herald_shared::{
    stream::NOTIFY_STREAM,
    subject::{NOTIFY_SUBJECTS, direct_get_subject},
};
use serde_json::json;
use tokio::sync::{OnceCell, Semaphore};

mod batch;
mod joins;
mod range;

pub(crate) use range::Range;

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
/// On a `multi_last` end-of-batch: the responder's last seq (none was asked for).
const UP_TO_SEQUENCE: &str = "Nats-UpTo-Sequence";
/// How often a read answered by a replica behind is asked again; the pauses
/// between double from [`BEHIND_PAUSE`], so a follower has ~1.5 s to catch up.
const BEHIND_ATTEMPTS: u32 = 5;
const BEHIND_PAUSE: Duration = Duration::from_millis(100);
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
    /// A read that several callers shared failed.
    #[error("{0}")]
    Shared(Arc<ReadError>),
    #[error("no reply within {REPLY_TIMEOUT:?}")]
    TimedOut,
    #[error("direct get answered {status}: {description}")]
    Status { status: u16, description: String },
    #[error("a reply without Nats-Sequence or Nats-Subject")]
    Malformed,
    /// The replica that answered has not stored `needed` yet: its answer
    /// could be short or older than what this node already saw.
    #[error("the answering replica is behind: it is at seq {at}, seq {needed} is stored")]
    Behind { at: u64, needed: u64 },
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

/// Reads the notification stream; cheap to clone: one pointer, which every
/// channel's forwarder keeps (a copy of the NATS client handle and the rest
/// would be about 250 bytes per channel of every idle socket).
#[derive(Debug, Clone)]
pub(crate) struct StreamReader(Arc<Reader>);

/// What a [`StreamReader`] points to.
#[derive(Debug)]
pub(crate) struct Reader {
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
    /// The highest seq this node knows to be stored (live copies and read
    /// replies): a `multi_last` from a replica below it is stale.
    seen: Arc<AtomicU64>,
    /// The subject of a message this node saw stored (one of the latest),
    /// added to every `multi_last` so that the answer always has an
    /// end-of-batch with the responder's last seq, even when none of the
    /// channels asked about has anything stored.
    anchor: Arc<Mutex<Option<String>>>,
    /// `first_seq_from` reads in flight, by seq: callers asking the same
    /// share one read (a reconnect storm asks from 0 for every socket whose
    /// channel has nothing stored).
    first_seq_reads: Mutex<HashMap<u64, Arc<FirstSeqRead>>>,
    /// Joins waiting for their channel's last seq, read together.
    joins: joins::JoinReads,
}

/// One `first_seq_from` read that every caller asking meanwhile awaits.
type FirstSeqRead = OnceCell<Result<Option<u64>, Arc<ReadError>>>;

impl std::ops::Deref for StreamReader {
    type Target = Reader;

    fn deref(&self) -> &Reader {
        &self.0
    }
}

// === impl StreamReader ===

impl StreamReader {
    /// Reads over `nats`, at most `page_bytes` per page (but at least one
    /// message), at most `concurrency` requests at once.
    pub(crate) fn new(nats: async_nats::Client, page_bytes: usize, concurrency: usize) -> Self {
        Self(Arc::new(Reader {
            nats,
            api_subject: direct_get_subject(NOTIFY_STREAM).into(),
            page_bytes,
            turns: Arc::new(Semaphore::new(concurrency.max(1))),
            seen: Arc::new(AtomicU64::new(0)),
            anchor: Arc::default(),
            first_seq_reads: Mutex::default(),
            joins: joins::JoinReads::default(),
        }))
    }

    /// Notes that `seq` is stored on `subject` (e.g. a live copy arrived).
    pub(crate) fn saw(&self, seq: u64, subject: &str) {
        if self.seen.fetch_max(seq, Ordering::Relaxed) < seq {
            let mut anchor = self.anchor.lock().expect("anchor lock");
            if anchor.as_deref() != Some(subject) {
                *anchor = Some(subject.to_string());
            }
        }
    }

    /// The last stored seq of each subject that has one, as of a moment no
    /// earlier than any seq this node saw stored before the call.
    pub(crate) async fn last_seqs(
        &self,
        subjects: &[String],
    ) -> Result<HashMap<String, u64>, ReadError> {
        let mut lasts = HashMap::with_capacity(subjects.len());
        for chunk in subjects.chunks(MULTI_LAST_SUBJECTS) {
            let floor = self.seen.load(Ordering::Relaxed);
            let anchor = self.anchor.lock().expect("anchor lock").clone();
            let mut asked = chunk.to_vec();
            if let Some(anchor) = anchor.filter(|a| !chunk.contains(a)) {
                asked.push(anchor);
            }
            let request = json!({ "multi_last": asked, "batch": asked.len() });
            let batch = self
                .until_current(|| async {
                    let batch = self.batch(&request).await?;
                    // Nothing matched (404, no end-of-batch) though the anchor
                    // is stored: behind, or retention removed the anchor.
                    let at = batch.up_to.unwrap_or(0);
                    if at < floor {
                        return Err(ReadError::Behind { at, needed: floor });
                    }
                    Ok(Some(batch))
                })
                .await;
            let batch = match batch {
                Ok(batch) => batch,
                // Only the leader can tell those apart (rare: the anchor is
                // renewed by every live copy).
                Err(ReadError::Behind { at: 0, .. }) => None,
                Err(err) => return Err(err),
            };
            match batch {
                Some(batch) => {
                    self.seen
                        .fetch_max(batch.up_to.unwrap_or(0), Ordering::Relaxed);
                    lasts.extend(
                        batch
                            .messages
                            .into_iter()
                            .filter(|m| chunk.contains(&m.subject))
                            .map(|m| (m.subject, m.seq)),
                    );
                }
                None => {
                    for subject in chunk {
                        if let Some(seq) = self.leader_last_seq(subject).await? {
                            lasts.insert(subject.clone(), seq);
                        }
                    }
                }
            }
        }
        Ok(lasts)
    }

    /// The last seq stored on `subject`, from the stream leader.
    async fn leader_last_seq(&self, subject: &str) -> Result<Option<u64>, ReadError> {
        let jetstream = async_nats::jetstream::new(self.nats.clone());
        let read = async {
            let stream = jetstream.get_stream_no_info(NOTIFY_STREAM).await?;
            match stream.get_last_raw_message_by_subject(subject).await {
                Ok(message) => Ok(Some(message.sequence)),
                Err(err) if is_no_message(&err) => Ok(None),
                Err(err) => Err(async_nats::Error::from(err)),
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, read)
            .await
            .map_err(|_| ReadError::TimedOut)?
            .map_err(ReadError::Nats)
    }

    /// The first seq stored at or after `seq` on any channel; `None` when the
    /// stream holds nothing from there on. A replica behind holds a prefix
    /// of the stream, so only its "nothing" can be wrong: that one is asked
    /// of the stream leader.
    ///
    /// Callers asking from the same seq while a read is in flight share it.
    /// An answer read a moment before a caller asked is as good as its own:
    /// retention may remove messages between any check and the reads after
    /// it, whenever the check was made.
    pub(crate) async fn first_seq_from(&self, seq: u64) -> Result<Option<u64>, ReadError> {
        let read = {
            let mut reads = self.first_seq_reads.lock().expect("first seq lock");
            reads.entry(seq).or_default().clone()
        };
        let answer = read
            .get_or_init(|| async { self.read_first_seq_from(seq).await.map_err(Arc::new) })
            .await
            .clone();
        {
            let mut reads = self.first_seq_reads.lock().expect("first seq lock");
            if reads
                .get(&seq)
                .is_some_and(|current| Arc::ptr_eq(current, &read))
            {
                reads.remove(&seq);
            }
        }
        answer.map_err(ReadError::Shared)
    }

    async fn read_first_seq_from(&self, seq: u64) -> Result<Option<u64>, ReadError> {
        let request = json!({ "seq": seq.max(1), "batch": 1, "next_by_subj": NOTIFY_SUBJECTS });
        let batch = self.batch(&request).await?;
        if let Some(first) = batch.messages.first() {
            return Ok(Some(first.seq));
        }
        let jetstream = async_nats::jetstream::new(self.nats.clone());
        let read = async {
            let stream = jetstream.get_stream_no_info(NOTIFY_STREAM).await?;
            let message = stream
                .raw_message_builder()
                .sequence(seq.max(1))
                .next_by_subject(NOTIFY_SUBJECTS.to_string())
                .send()
                .await;
            match message {
                Ok(message) => Ok(Some(message.sequence)),
                Err(err) if is_no_message(&err) => Ok(None),
                Err(err) => Err(async_nats::Error::from(err)),
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, read)
            .await
            .map_err(|_| ReadError::TimedOut)?
            .map_err(ReadError::Nats)
    }

    /// Runs `read` until it is answered by a replica that is not behind, a
    /// few times with growing pauses; any other outcome is returned at once.
    async fn until_current<T, F, Fut>(&self, read: F) -> Result<T, ReadError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ReadError>>,
    {
        let mut attempt = 1;
        loop {
            match read().await {
                Err(err @ ReadError::Behind { .. }) if attempt < BEHIND_ATTEMPTS => {
                    tracing::debug!(error = %err, attempt, "Read answered by a replica behind; asking again.");
                    tokio::time::sleep(BEHIND_PAUSE * (1 << (attempt - 1))).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
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
}

fn is_no_message(err: &async_nats::jetstream::stream::RawMessageError) -> bool {
    use async_nats::jetstream::{ErrorCode, stream::RawMessageErrorKind};
    match err.kind() {
        RawMessageErrorKind::NoMessageFound => true,
        RawMessageErrorKind::JetStream(e) => e.error_code() == ErrorCode::NO_MESSAGE_FOUND,
        _ => false,
    }
}
