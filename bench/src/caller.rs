//! Sockets that call: each is one user (`u<i>`, token with the `rpc` claim `calendar.*`) who
//! owns one calendar (`bench-u<i>`, seeded with them as its only member), and makes `rpc`
//! calls on its socket in windows the scenario asks for: at a paced rate, flat out (its next
//! call as soon as the last is answered), or filling its calendar to a number of events.
//!
//! The calls alternate between the read path (`calendar.event.list` of one week) and the write
//! path: `calendar.event.create`, or `calendar.event.delete` of the socket's oldest event once
//! it holds [`KEEP`], so every calendar stays about that size however long the run (the
//! service rewrites a whole calendar per change, and holds at most 500 events). Each
//! successful write publishes a domain event whose audience is the caller, so it also comes
//! back to the socket as a notification, which the window waits for.
//!
//! A window ends when its time is up, every call is answered and every due notification is in,
//! or [`DRAIN_TIMEOUT`] after its time; calls still pending then count as missing.

use std::{
    collections::{HashMap, VecDeque},
    net::Ipv4Addr,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _, stream};
use serde::Deserialize;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    calls::{CallTally, Method},
    fleet::SOURCE_ADDRESSES,
    frame::{self, ChannelKind, Frame},
    recorder::Recorder,
    socket::{self, SocketSpec, Ws},
    stack::Stack,
};

/// Events each calendar is filled to, and kept at.
pub(crate) const KEEP: usize = 20;
/// How long a window waits, after its time, for answers and notifications.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Sockets connecting at once.
const CONNECT_CONCURRENCY: usize = 50;
/// The week every list asks for, and every created event lies in.
const WEEK_FROM: &str = "2026-12-07T00:00:00Z";
const WEEK_TO: &str = "2026-12-14T00:00:00Z";

/// How a window's calls are paced, per socket.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pace {
    /// One call every this long (open loop: a slow answer does not delay the next call).
    Every(Duration),
    /// This many calls in flight at all times (closed loop).
    FlatOut(usize),
    /// Creates, one at a time, until the calendar holds this many of the socket's events.
    Fill(usize),
}

/// The calendar user `u<index>` owns, and may call.
pub(crate) fn calendar_of(index: usize) -> String {
    format!("bench-u{index}")
}

/// `HERALD_CALENDAR_MEMBERS` for `n` sockets: each user the only member of their calendar.
pub(crate) fn members(n: usize) -> String {
    (0..n)
        .map(|i| format!("{}=u{i}", calendar_of(i)))
        .collect::<Vec<_>>()
        .join(",")
}

struct Command {
    pace: Pace,
    /// When this socket sends its first call (paced windows spread sockets over one interval).
    first: Instant,
    until: Instant,
    started: std::time::Instant,
    reply: oneshot::Sender<CallTally>,
}

/// The calling sockets, each a task waiting for its next window.
#[derive(Debug)]
pub(crate) struct Callers {
    commands: Vec<mpsc::Sender<Command>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Callers {
    /// Connects `n` sockets round-robin over the edges and waits for every `welcome`.
    pub(crate) async fn connect(
        stack: &Stack,
        n: usize,
        recorder: &Arc<Recorder>,
    ) -> anyhow::Result<Self> {
        if stack.edges.is_empty() {
            bail!("the rpc scenario needs edges");
        }
        let specs = (0..n)
            .map(|index| {
                let token =
                    stack
                        .keys
                        .user_token_with_rpc(&format!("u{index}"), &[], &["calendar.*"])?;
                let n_edges = stack.edges.len();
                let host = 2 + (index / n_edges) % SOURCE_ADDRESSES;
                Ok(SocketSpec {
                    index,
                    edge: stack.edges[index % n_edges].addr,
                    source: Ipv4Addr::new(127, 0, 0, u8::try_from(host).unwrap_or(2)),
                    path_and_query: format!("/v1/ws?token={token}"),
                    since: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let connected: Vec<_> = stream::iter(specs)
            .map(|spec| async move {
                let connected = socket::connect_with_retries(&spec, recorder).await;
                (spec.index, connected)
            })
            .buffer_unordered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        let mut commands = Vec::new();
        let mut tasks = Vec::new();
        for (index, connected) in connected {
            let (ws, welcome) = connected.with_context(|| format!("socket {index}"))?;
            recorder.welcomed();
            let last_seq = welcome
                .seqs
                .iter()
                .find(|(channel, _)| channel.starts_with("user:"))
                .map_or(0, |(_, seq)| *seq);
            let (tx, rx) = mpsc::channel(1);
            let caller = Caller {
                ws,
                calendar: calendar_of(index),
                owned: VecDeque::new(),
                pending: HashMap::new(),
                next_ref: 0,
                calls: 0,
                last_seq,
                recorder: recorder.clone(),
            };
            commands.push(tx);
            tasks.push(tokio::spawn(caller.run(rx)));
        }
        Ok(Self { commands, tasks })
    }

    /// Runs one window of `duration` on every socket and merges their tallies. With
    /// [`Pace::Every`], the sockets' first calls are spread evenly over one interval.
    pub(crate) async fn window(&self, pace: Pace, duration: Duration) -> CallTally {
        let started = std::time::Instant::now();
        let now = Instant::now();
        let until = now + duration;
        let n = self.commands.len().max(1);
        let mut replies = Vec::new();
        for (i, commands) in self.commands.iter().enumerate() {
            let first = match pace {
                Pace::Every(interval) => now + interval.mul_f64(i as f64 / n as f64),
                Pace::FlatOut(_) | Pace::Fill(_) => now,
            };
            let (reply, answer) = oneshot::channel();
            let command = Command {
                pace,
                first,
                until,
                started,
                reply,
            };
            if commands.send(command).await.is_ok() {
                replies.push(answer);
            }
        }
        let mut tally = CallTally::new(started);
        for answer in replies {
            if let Ok(one) = answer.await {
                tally.merge(&one);
            }
        }
        tally
    }

    /// Closes every socket.
    pub(crate) async fn close(self) {
        drop(self.commands);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// One calling socket.
struct Caller {
    ws: Ws,
    calendar: String,
    /// Ids of the events this socket created and has not deleted, oldest first.
    owned: VecDeque<String>,
    /// Calls awaiting their `rpc_result`, by `ref`.
    pending: HashMap<String, (Method, Instant)>,
    next_ref: u64,
    /// Calls made so far (the mix alternates on it).
    calls: u64,
    last_seq: u64,
    recorder: Arc<Recorder>,
}

/// The parts of an `rpc_result` the bench reads.
#[derive(Deserialize)]
struct RpcResult {
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<RpcError>,
}

#[derive(Deserialize)]
struct RpcError {
    code: String,
}

impl Caller {
    /// Between windows: reads (pings are answered on reads); ends when the commands do.
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        // What arrives between windows: straggling notifications, late answers.
        let mut idle = CallTally::new(std::time::Instant::now());
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => {
                        let mut tally = CallTally::new(command.started);
                        let alive = self.window(&command, &mut tally).await;
                        let _ = command.reply.send(tally);
                        if !alive {
                            return;
                        }
                    }
                    None => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
                        return;
                    }
                },
                message = self.ws.next() => {
                    let late = idle.unexpected;
                    if !self.on_message(message, &mut idle) {
                        return;
                    }
                    if idle.unexpected > late {
                        self.recorder.other_frame("rpc_result-between-windows");
                    }
                }
            }
        }
    }

    /// Runs one window; `false` when the socket has ended.
    async fn window(&mut self, command: &Command, tally: &mut CallTally) -> bool {
        let alive = self.calls_until_done(command, tally).await;
        for (_, (method, _)) in self.pending.drain() {
            tally.missing(method);
        }
        alive
    }

    async fn calls_until_done(&mut self, command: &Command, tally: &mut CallTally) -> bool {
        let mut next = command.first;
        let drain_until = command.until + DRAIN_TIMEOUT;
        loop {
            let now = Instant::now();
            let open = now < command.until;
            let sending = match command.pace {
                Pace::Every(interval) => {
                    let mut due = 0;
                    while open && next <= now {
                        due += 1;
                        next += interval;
                    }
                    due
                }
                Pace::FlatOut(depth) if open => depth.saturating_sub(self.pending.len()),
                // A refused create ends the fill: the scenario reports it rather than retrying.
                Pace::Fill(keep)
                    if open
                        && self.pending.is_empty()
                        && self.owned.len() < keep
                        && tally.n_errors() == 0 =>
                {
                    1
                }
                _ => 0,
            };
            for _ in 0..sending {
                let fill = matches!(command.pace, Pace::Fill(_));
                if !self.call(fill, tally).await {
                    return false;
                }
            }
            let filled = matches!(command.pace, Pace::Fill(keep)
                if self.owned.len() >= keep || tally.n_errors() > 0);
            let notified = tally.notifications >= tally.writes_ok();
            if (!open || filled) && self.pending.is_empty() && notified {
                return true;
            }
            if now >= drain_until {
                return true;
            }
            let wake = match command.pace {
                Pace::Every(_) if open => next.min(command.until),
                _ if open => command.until,
                _ => drain_until,
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                message = self.ws.next() => {
                    if !self.on_message(message, tally) {
                        return false;
                    }
                }
            }
        }
    }

    /// Sends this socket's next call; `false` if the socket failed.
    async fn call(&mut self, fill: bool, tally: &mut CallTally) -> bool {
        let k = self.calls;
        self.calls += 1;
        let method = if fill {
            Method::Create
        } else if k.is_multiple_of(2) {
            Method::List
        } else if self.owned.len() >= KEEP {
            Method::Delete
        } else {
            Method::Create
        };
        let calendar = &self.calendar;
        let data = match method {
            Method::List => {
                format!(r#"{{"calendar_id":"{calendar}","from":"{WEEK_FROM}","to":"{WEEK_TO}"}}"#)
            }
            Method::Create => {
                // Half-hour events at distinct hours of the week, no location (no room clash).
                let hour = k % (7 * 24);
                let (day, hour) = (7 + hour / 24, hour % 24);
                format!(
                    r#"{{"calendar_id":"{calendar}","title":"bench {k}","starts_at":"2026-12-{day:02}T{hour:02}:00:00Z","ends_at":"2026-12-{day:02}T{hour:02}:30:00Z"}}"#
                )
            }
            Method::Delete => {
                let event_id = self.owned.pop_front().unwrap_or_default();
                format!(r#"{{"calendar_id":"{calendar}","event_id":"{event_id}"}}"#)
            }
        };
        let reference = self.next_ref.to_string();
        self.next_ref += 1;
        let frame = format!(
            r#"{{"type":"rpc","ref":"{reference}","method":"{}","data":{data}}}"#,
            method.name()
        );
        self.pending.insert(reference, (method, Instant::now()));
        tally.sent(method);
        if let Err(err) = self.ws.send(Message::text(frame)).await {
            self.recorder
                .other_frame(&format!("send-failed: {}", short(&err.to_string())));
            return false;
        }
        true
    }

    /// Handles what the socket read; `false` when it has ended.
    fn on_message(
        &mut self,
        message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        tally: &mut CallTally,
    ) -> bool {
        match message {
            Some(Ok(Message::Text(text))) => {
                self.on_text(text.as_str(), tally);
                true
            }
            Some(Ok(Message::Close(close))) => {
                let code =
                    close.map_or_else(|| "none".to_owned(), |c| u16::from(c.code).to_string());
                self.recorder.closed_by_server(&code);
                false
            }
            Some(Ok(_)) => true,
            Some(Err(_)) => {
                self.recorder.closed_by_server("error");
                false
            }
            None => {
                self.recorder.closed_by_server("eof");
                false
            }
        }
    }

    fn on_text(&mut self, text: &str, tally: &mut CallTally) {
        if text.starts_with(r#"{"type":"rpc_result""#) {
            let Ok(result) = serde_json::from_str::<RpcResult>(text) else {
                self.recorder.other_frame("rpc_result-unparsable");
                return;
            };
            let Some((method, sent)) = self.pending.remove(&result.reference) else {
                tally.unexpected += 1;
                return;
            };
            let took_us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            let code = result.error.as_ref().map(|e| e.code.as_str());
            tally.answered(method, code, took_us);
            if method == Method::Create && code.is_none() {
                let id = result
                    .result
                    .as_ref()
                    .and_then(|r| r["event_id"].as_str())
                    .map(str::to_owned);
                match id {
                    Some(id) => self.owned.push_back(id),
                    None => self.recorder.other_frame("create-result-without-event_id"),
                }
            }
            return;
        }
        match frame::parse(text) {
            Frame::Event(event) if event.channel == ChannelKind::User => {
                if event.seq > self.last_seq {
                    self.last_seq = event.seq;
                    tally.notifications += 1;
                } else {
                    tally.duplicated_notifications += 1;
                }
            }
            Frame::Event(_) => self.recorder.other_frame("event-on-a-namespace"),
            Frame::Welcome(_) => self.recorder.other_frame("welcome-again"),
            Frame::Other(kind) => self.recorder.other_frame(&kind),
        }
    }
}

fn short(text: &str) -> String {
    text.chars().take(80).collect()
}
