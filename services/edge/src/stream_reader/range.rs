//! `Range`: one subject's stored messages in `(after, upto]`, a page at a
//! time, read so that a replica behind can neither cut it short nor end it
//! early (the stall of issue 10, item 9).

use serde_json::json;

use super::{
    BEHIND_ATTEMPTS, BEHIND_PAUSE, PAGE_ATTEMPTS, PAGE_SIZE, ReadError, StoredMessage, StreamReader,
};

/// Walks one subject's messages in `(after, upto]`, a page at a time.
#[derive(Debug)]
pub(crate) struct Range {
    subject: String,
    next: u64,
    upto: u64,
    done: bool,
}

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
        let mut page = loop {
            let read = async {
                let batch = reader.batch(&request).await?;
                let mut page = batch.messages;
                if page.is_empty() && batch.more {
                    // One notification larger than a page: read it alone.
                    let request =
                        json!({ "seq": self.next, "batch": 1, "next_by_subj": self.subject });
                    page = reader.batch(&request).await?.messages;
                }
                // `upto` is stored on this subject (the channel's last seq, or
                // the previous seq a live copy named): nothing more before
                // reaching it means the replica that answered is behind.
                if page.is_empty() && self.next <= self.upto {
                    return Err(ReadError::Behind {
                        at: self.next - 1,
                        needed: self.upto,
                    });
                }
                Ok(page)
            };
            match read.await {
                Err(err @ ReadError::Incomplete { .. }) if attempt < PAGE_ATTEMPTS => {
                    tracing::debug!(error = %err, attempt, "Page read with a hole; reading it again.");
                    attempt += 1;
                }
                Err(err @ ReadError::Behind { .. }) if attempt < BEHIND_ATTEMPTS => {
                    tracing::debug!(error = %err, attempt, "Page read from a replica behind; asking again.");
                    tokio::time::sleep(BEHIND_PAUSE * (1 << (attempt - 1))).await;
                    attempt += 1;
                }
                read => break read?,
            }
        };
        if let Some(last) = page.last() {
            self.next = last.seq + 1;
        }
        page.retain(|m| m.seq <= self.upto);
        // Done once past `upto`, never on the batch's word alone: under a
        // storm a page came back cut short with nothing said to be pending,
        // and the replay ended there, silently skipping the rest (the stall
        // of issue 10, item 9). A page that ends before `upto` is followed by
        // another read, which finds the rest or says the replica is behind.
        self.done = self.next > self.upto;
        Ok(if page.is_empty() { None } else { Some(page) })
    }
}
