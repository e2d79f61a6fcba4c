//! The live path's own NATS connection: core subscriptions to the `live.…`
//! subjects of this node's channels, each with a small queue of its own.
//!
//! async-nats gives every subscription a tokio channel, and tokio allocates
//! its first block of 32 messages (5.9 KB) up front: most of what an idle
//! socket cost, since every socket of a different user is a subscription of
//! its own. Here a subscription is an entry in one map and a queue that
//! allocates only while messages wait in it. One task reads the connection
//! and hands each message to its subscription's queue.
//!
//! What it speaks is the part of the protocol a subscriber needs
//! ([`proto`]); [`connection`] dials (TLS, and the same credentials as the
//! node's other connections), resubscribes after every reconnect and
//! notifies `on_connect` then: what was published while it was down is lost
//! to core NATS, and the hub reconciles.
//!
//! A queue is bounded: a subscription whose task falls that far behind
//! drops new messages and remembers the highest seq it dropped, which its
//! task then catches up from the stream — nothing is lost, the stream is
//! the record.

mod connection;
mod proto;

use std::{
    collections::{HashMap, VecDeque},
    future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
};

use async_nats::header::NATS_SEQUENCE;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use herald_shared::nats::NatsAuth;
use tokio::sync::{Notify, mpsc, oneshot};

/// Messages a subscription's queue holds before it drops new ones.
pub const QUEUE_BOUND: usize = 8192;
/// A drained queue keeps an allocation up to this many messages (a trickle
/// reuses it); a larger one, left by a burst, is given back.
const KEPT_CAPACITY: usize = 8;

/// A message on a live subscription.
#[derive(Debug)]
pub struct Message {
    pub headers: Option<async_nats::HeaderMap>,
    pub payload: Bytes,
}

/// What a subscription yields: a message, or word that messages were
/// dropped because its queue was full.
#[derive(Debug)]
pub enum Received {
    Message(Message),
    /// Messages were dropped; the highest `Nats-Sequence` among them (0 if
    /// none carried one).
    Dropped {
        upto: u64,
    },
}

/// Subscribing failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("the live NATS connection is closed")]
    Closed,
}

/// A connection for live subscriptions; clones share it. Dropping the last
/// clone closes it.
#[derive(Debug, Clone)]
pub struct LiveClient {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

/// What the client handles and the connection task share.
#[derive(Debug, Default)]
struct Shared {
    subscriptions: Mutex<Subscriptions>,
    connected: AtomicBool,
}

#[derive(Debug, Default)]
struct Subscriptions {
    by_sid: HashMap<u64, Registered>,
    next_sid: u64,
}

/// A subscription as the connection task sees it.
#[derive(Debug)]
struct Registered {
    subject: Box<str>,
    queue: Arc<Queue>,
    /// The connection (counted from 1) its `SUB` was last written on.
    sent_on: u64,
}

/// What the client asks of the connection task.
#[derive(Debug)]
enum Command {
    /// Write the `SUB` of this sid, if not written on this connection yet.
    Subscribe(u64),
    Unsubscribe(u64),
    /// Answered once the server has processed everything written before.
    Flush(oneshot::Sender<()>),
}

/// One subscription's waiting messages.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct QueueState {
    messages: VecDeque<Message>,
    /// Messages were dropped: the highest `Nats-Sequence` among them (0 if
    /// none carried one).
    dropped: Option<u64>,
    closed: bool,
}

/// A live subscription: yields its messages in order; unsubscribes when dropped.
#[derive(Debug)]
pub struct Subscription {
    sid: u64,
    queue: Arc<Queue>,
    client: LiveClient,
}

// === impl LiveClient ===

impl LiveClient {
    /// Connects to the first of `urls` (a comma-separated seed list) that
    /// accepts `auth`, and stays connected (to any of them, or a server the
    /// cluster announces) until dropped. `on_connect` is notified on every
    /// (re)connect, the first included.
    ///
    /// # Errors
    /// A malformed URL list, an unreadable credential file, or no server
    /// accepts the connection the first time.
    pub async fn connect(
        urls: &str,
        auth: &NatsAuth,
        name: &str,
        on_connect: Option<Arc<Notify>>,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        connection::start(urls, auth, name, on_connect, shared.clone(), receiver).await?;
        Ok(Self { shared, commands })
    }

    /// Whether the connection is up now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Subscribes to `subject`; returns once the server has the
    /// subscription (after a reconnect if the connection is down now), so
    /// nothing published later can be missed. Callers bound the wait.
    ///
    /// # Errors
    /// The connection task has ended.
    pub async fn subscribe(&self, subject: &str) -> Result<Subscription, SubscribeError> {
        let queue = Arc::new(Queue::default());
        let sid = {
            let mut subscriptions = self.shared.subscriptions.lock().expect("live lock");
            subscriptions.next_sid += 1;
            let sid = subscriptions.next_sid;
            subscriptions.by_sid.insert(
                sid,
                Registered {
                    subject: subject.into(),
                    queue: queue.clone(),
                    sent_on: 0,
                },
            );
            sid
        };
        // Unsubscribes if the flush fails or the caller gives up waiting.
        let subscription = Subscription {
            sid,
            queue,
            client: self.clone(),
        };
        self.send(Command::Subscribe(sid))?;
        self.flush().await?;
        Ok(subscription)
    }

    /// Waits until the server has processed every command sent before.
    async fn flush(&self) -> Result<(), SubscribeError> {
        let (done, flushed) = oneshot::channel();
        self.send(Command::Flush(done))?;
        flushed.await.map_err(|_| SubscribeError::Closed)
    }

    fn send(&self, command: Command) -> Result<(), SubscribeError> {
        self.commands
            .send(command)
            .map_err(|_| SubscribeError::Closed)
    }
}

// === impl Shared ===

impl Shared {
    /// Hands a message to its subscription, if it still has one.
    fn dispatch(&self, sid: u64, message: Message) {
        let queue = {
            let subscriptions = self.subscriptions.lock().expect("live lock");
            match subscriptions.by_sid.get(&sid) {
                Some(registered) => registered.queue.clone(),
                None => return,
            }
        };
        queue.push(message);
    }

    /// Ends every subscription: the connection task is gone.
    fn close_all(&self) {
        let subscriptions = self.subscriptions.lock().expect("live lock");
        for registered in subscriptions.by_sid.values() {
            registered.queue.close();
        }
    }
}

// === impl Queue ===

impl Queue {
    fn push(&self, message: Message) {
        {
            let mut state = self.state.lock().expect("live queue lock");
            if state.messages.len() < QUEUE_BOUND {
                state.messages.push_back(message);
            } else {
                let seq = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get_last(NATS_SEQUENCE))
                    .and_then(|value| value.as_str().parse::<u64>().ok())
                    .unwrap_or(0);
                state.dropped = Some(state.dropped.unwrap_or(0).max(seq));
            }
        }
        self.waker.wake();
    }

    fn close(&self) {
        self.state.lock().expect("live queue lock").closed = true;
        self.waker.wake();
    }

    fn take(&self) -> Option<Option<Received>> {
        let mut state = self.state.lock().expect("live queue lock");
        if let Some(message) = state.messages.pop_front() {
            if state.messages.is_empty() && state.messages.capacity() > KEPT_CAPACITY {
                // Give a burst's allocation back; a small one is reused.
                state.messages = VecDeque::new();
            }
            return Some(Some(Received::Message(message)));
        }
        if let Some(upto) = state.dropped.take() {
            return Some(Some(Received::Dropped { upto }));
        }
        state.closed.then_some(None)
    }
}

// === impl Subscription ===

impl Subscription {
    /// The next message (or drop notice); `None` once the connection is closed.
    pub async fn next(&mut self) -> Option<Received> {
        future::poll_fn(|cx| {
            if let Some(next) = self.queue.take() {
                return Poll::Ready(next);
            }
            self.queue.waker.register(cx.waker());
            // A push between the take and the registration woke nobody.
            match self.queue.take() {
                Some(next) => Poll::Ready(next),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let removed = {
            let mut subscriptions = self.client.shared.subscriptions.lock().expect("live lock");
            subscriptions.by_sid.remove(&self.sid)
        };
        if removed.is_some_and(|registered| registered.sent_on != 0) {
            let _ = self.client.send(Command::Unsubscribe(self.sid));
        }
    }
}
