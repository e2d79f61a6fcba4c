//! A client that keeps a cursor per channel, records every event it gets,
//! and reconnects to the next edge with its cursors: what a browser client
//! does, and what "nothing lost, nothing twice" is counted against.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use herald_shared::frames::ServerFrame;
use serde_json::json;

use crate::clients::{WsClient, user_token};

/// Seqs received (or expected), per channel, in order.
pub type Seqs = HashMap<String, Vec<u64>>;

/// One client's view: its channels' cursors and everything it received.
#[derive(Debug)]
pub struct ResumingClient {
    pub user: String,
    pub namespaces: Vec<String>,
    token: String,
    /// The epoch from the last `welcome`.
    pub epoch: Option<String>,
    /// Every event received, per channel; shared so a test can watch progress.
    pub received: Arc<Mutex<Seqs>>,
    /// `history_truncated` frames received.
    pub truncated: Arc<Mutex<Vec<ServerFrame>>>,
    /// Where live delivery started on a channel that had no cursor yet
    /// (`welcome.seqs`, or a live `subscribed`'s seq): its cursor until an
    /// event arrives, as herald.js keeps it. Without it a client that
    /// reconnects before its first event starts live again, and whatever
    /// was stored while it was away is never asked for.
    starts: HashMap<String, u64>,
    socket: Option<WsClient>,
}

/// Counts of one comparison between what was expected and what arrived.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub expected: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
}

impl ResumingClient {
    pub fn new(user: &str, namespaces: &[&str]) -> Self {
        Self {
            user: user.into(),
            namespaces: namespaces.iter().map(|ns| ns.to_string()).collect(),
            token: user_token(user, namespaces),
            epoch: None,
            received: Arc::default(),
            truncated: Arc::default(),
            starts: HashMap::new(),
            socket: None,
        }
    }

    /// The last seq received on `channel`, or else where live delivery
    /// started on it.
    pub fn cursor(&self, channel: &str) -> Option<u64> {
        self.received
            .lock()
            .unwrap()
            .get(channel)
            .and_then(|seqs| seqs.last().copied())
            .or_else(|| self.starts.get(channel).copied())
    }

    /// Connects to `ws_base` (`ws://host/v1/ws`) and resumes every channel
    /// from its cursor: the user channel with `since` at connect, each
    /// namespace with its own `since` in `subscribe`. Returns once every
    /// `subscribed` has arrived (events before them are recorded).
    pub async fn connect(&mut self, ws_base: &str) -> Result<(), String> {
        let user_channel = format!("user:{}", self.user);
        let mut url = format!("{ws_base}?token={}", self.token);
        if let Some(since) = self.cursor(&user_channel) {
            url.push_str(&format!("&since={since}"));
            if let Some(epoch) = &self.epoch {
                url.push_str(&format!("&epoch={epoch}"));
            }
        }
        let mut socket = WsClient::try_connect(&url).await?;
        match socket.try_next_frame().await? {
            ServerFrame::Welcome { epoch, seqs, .. } => {
                self.epoch = Some(epoch);
                for (channel, seq) in seqs {
                    self.starts.entry(channel.to_string()).or_insert(seq);
                }
            }
            other => return Err(format!("expected welcome, got {other:?}")),
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            let mut subscribe =
                json!({ "type": "subscribe", "ref": i.to_string(), "namespace": ns });
            if let Some(since) = self.cursor(&format!("ns:{ns}")) {
                subscribe["since"] = json!(since);
                subscribe["epoch"] = json!(self.epoch);
            }
            socket.send_json(&subscribe).await;
        }
        self.socket = Some(socket);
        let mut n_subscribed = 0;
        while n_subscribed < self.namespaces.len() {
            if let ServerFrame::Subscribed { .. } = self.next().await? {
                n_subscribed += 1;
            }
        }
        Ok(())
    }

    /// Reads one frame and records it; `Err` when the connection is gone.
    pub async fn next(&mut self) -> Result<ServerFrame, String> {
        let socket = self.socket.as_mut().ok_or("not connected")?;
        let frame = socket.try_next_frame().await;
        match &frame {
            Ok(ServerFrame::Event { channel, seq, .. }) => {
                self.received
                    .lock()
                    .unwrap()
                    .entry(channel.to_string())
                    .or_default()
                    .push(*seq);
            }
            Ok(truncated @ ServerFrame::HistoryTruncated { .. }) => {
                self.truncated.lock().unwrap().push(truncated.clone());
            }
            Ok(_) => {}
            Err(_) => self.socket = None,
        }
        frame
    }

    /// Drops the connection without a close handshake.
    pub fn disconnect(&mut self) {
        self.socket = None;
    }

    /// Compares what arrived with `expected` (seqs per channel, in order).
    pub fn tally(&self, expected: &Seqs) -> Tally {
        tally(expected, &self.received.lock().unwrap())
    }
}

impl Tally {
    /// Asserts nothing was lost, duplicated or reordered, with every count in
    /// the message; prints the counts on success too.
    pub fn assert_exact(self, what: &str) {
        let counts = format!(
            "{what}: expected {}, delivered {}, lost {}, duplicated {}, out of order {}",
            self.expected, self.delivered, self.lost, self.duplicated, self.out_of_order
        );
        assert_eq!(
            (
                self.lost,
                self.duplicated,
                self.out_of_order,
                self.delivered
            ),
            (0, 0, 0, self.expected),
            "{counts}"
        );
        #[allow(clippy::print_stderr, reason = "the counts are the test's report")]
        {
            eprintln!("{counts}");
        }
    }
}

/// Counts delivered, lost, duplicated and out-of-order seqs of the channels in `expected`.
pub fn tally(expected: &Seqs, received: &Seqs) -> Tally {
    let mut tally = Tally::default();
    for (channel, want) in expected {
        let got = received.get(channel).map(Vec::as_slice).unwrap_or_default();
        let mut unique: Vec<u64> = got.to_vec();
        unique.sort_unstable();
        unique.dedup();
        tally.expected += want.len();
        tally.delivered += got.len();
        tally.duplicated += got.len() - unique.len();
        tally.lost += want
            .iter()
            .filter(|seq| unique.binary_search(seq).is_err())
            .count();
        tally.out_of_order += got.windows(2).filter(|pair| pair[0] >= pair[1]).count();
    }
    tally
}
