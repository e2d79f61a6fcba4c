//! The last seq of each channel being joined, read in batches: joins that
//! arrive while a read is in flight go together in the next `multi_last`
//! (up to 64 channels), so a reconnect storm of N sockets costs about N / 64
//! reads, not N reads each waiting for one of the reader's turns.
//!
//! A join asks only after its subscription is registered, and its channel
//! goes into a read that starts after it asked (never one already in
//! flight), so what the read misses arrives live.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{MULTI_LAST_SUBJECTS, ReadError, StreamReader};

/// One join's answer: the channel's last stored seq, `None` if nothing is stored.
type Answer = Result<Option<u64>, Arc<ReadError>>;

/// The joins waiting for the next read, and whether a task is reading.
#[derive(Debug, Default)]
pub(super) struct JoinReads {
    state: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    subjects: Vec<(String, oneshot::Sender<Answer>)>,
    reading: bool,
}

impl StreamReader {
    /// The last seq stored on `subject`, read after this call began (`None`:
    /// nothing stored).
    pub(crate) async fn last_seq_of(&self, subject: &str) -> Result<Option<u64>, ReadError> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut waiting = self.joins.state.lock().expect("join reads lock");
            waiting.subjects.push((subject.to_owned(), answer));
            !std::mem::replace(&mut waiting.reading, true)
        };
        if start {
            tokio::spawn(self.clone().read_joins());
        }
        answered
            .await
            .map_err(|_| ReadError::TimedOut)?
            .map_err(ReadError::Shared)
    }

    /// Reads the waiting joins' last seqs, 64 at a time, until none wait.
    async fn read_joins(self) {
        loop {
            let batch: Vec<_> = {
                let mut waiting = self.joins.state.lock().expect("join reads lock");
                if waiting.subjects.is_empty() {
                    waiting.reading = false;
                    return;
                }
                let n = waiting.subjects.len().min(MULTI_LAST_SUBJECTS);
                waiting.subjects.drain(..n).collect()
            };
            let subjects: Vec<String> = batch.iter().map(|(s, _)| s.clone()).collect();
            match self.last_seqs(&subjects).await {
                Ok(lasts) => {
                    for (subject, answer) in batch {
                        let _ = answer.send(Ok(lasts.get(&subject).copied()));
                    }
                }
                Err(err) => {
                    let err = Arc::new(err);
                    for (_, answer) in batch {
                        let _ = answer.send(Err(err.clone()));
                    }
                }
            }
        }
    }
}
