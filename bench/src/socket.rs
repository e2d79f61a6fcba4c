//! One browser-like client socket, from connect to close: binds a 127.0.0.x source address,
//! opens the WebSocket, waits for `welcome`, then reads frames and records every event (new or
//! repeated, and its latency) until the server closes it or the scenario cancels it.
//!
//! The reader keeps, per channel kind, the last seq it saw: a seq that is not above it is a
//! duplicate (Herald delivers each channel in seq order). Those last seqs, starting from the
//! `since` it resumed from or else the welcome's `seqs`, are the socket's resume cursors when
//! it ends.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use tokio::{net::TcpSocket, sync::Semaphore};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};
use tokio_util::sync::CancellationToken;

use crate::{
    frame::{self, ChannelKind, Frame, Welcome},
    recorder::Recorder,
};

/// Attempts per socket before it counts as failed.
const CONNECT_ATTEMPTS: u32 = 5;
/// Bound on one attempt, handshake and welcome included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The first retry delay; it grows linearly.
const RETRY_DELAY: Duration = Duration::from_millis(250);
/// tungstenite's default (128 KiB, zero-filled on first read) times 10,000 sockets would make
/// the load generator the biggest process on the box.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// How long a client close may take before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how one socket connects.
#[derive(Debug, Clone)]
pub(crate) struct SocketSpec {
    pub(crate) index: usize,
    pub(crate) edge: SocketAddr,
    pub(crate) source: Ipv4Addr,
    /// `/v1/ws?token=…` plus `ns`, `since`, `epoch` as needed.
    pub(crate) path_and_query: String,
    /// The `since` in the query, if any: the cursor of every channel named at connect.
    pub(crate) since: Option<u64>,
}

/// How a socket ended, with its cursors.
#[derive(Debug, Clone, Default)]
pub(crate) struct SocketEnd {
    pub(crate) index: usize,
    pub(crate) welcomed: bool,
    pub(crate) epoch: Option<String>,
    /// The last seq seen on the user channel (or where the welcome said live starts).
    pub(crate) user_seq: u64,
    pub(crate) ns_seq: u64,
    pub(crate) error: Option<String>,
}

pub(crate) type Ws = WebSocketStream<tokio::net::TcpStream>;

/// Runs one socket to its end. `gate` bounds how many handshakes are in progress at once; the
/// permit is returned once `welcome` has arrived.
pub(crate) async fn run(
    spec: SocketSpec,
    recorder: Arc<Recorder>,
    gate: Arc<Semaphore>,
    cancel: CancellationToken,
) -> SocketEnd {
    let mut end = SocketEnd {
        index: spec.index,
        ..SocketEnd::default()
    };
    let permit = tokio::select! {
        () = cancel.cancelled() => return end,
        permit = gate.acquire_owned() => permit,
    };
    let connected = tokio::select! {
        () = cancel.cancelled() => return end,
        connected = connect_with_retries(&spec, &recorder) => connected,
    };
    drop(permit);
    let (mut ws, welcome) = match connected {
        Ok(connected) => connected,
        Err(err) => {
            recorder.connect_failed();
            recorder.other_frame(&format!("connect-failed: {}", short(&format!("{err:#}"))));
            end.error = Some(format!("{err:#}"));
            return end;
        }
    };
    end.welcomed = true;
    // A resumed channel starts from the cursor: the edge replays what lies between it and the
    // welcome's seq (which is the channel's latest, resumed or not). Otherwise delivery starts
    // above the welcome's seq.
    for (channel, seq) in &welcome.seqs {
        let start = spec.since.unwrap_or(*seq);
        if channel.starts_with("user:") {
            end.user_seq = start;
        } else {
            end.ns_seq = start;
        }
    }
    end.epoch = Some(welcome.epoch);
    recorder.welcomed();
    read_until_end(&mut ws, &mut end, &recorder, &cancel).await;
    end
}

async fn read_until_end(
    ws: &mut Ws,
    end: &mut SocketEnd,
    recorder: &Recorder,
    cancel: &CancellationToken,
) {
    loop {
        let message = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                return;
            }
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => match frame::parse(text.as_str()) {
                Frame::Event(event) => {
                    let last = match event.channel {
                        ChannelKind::User => &mut end.user_seq,
                        ChannelKind::Namespace => &mut end.ns_seq,
                    };
                    let unique = event.seq > *last;
                    if unique {
                        *last = event.seq;
                    }
                    recorder.delivery(end.index, unique, event.sent_ns);
                }
                Frame::Welcome(_) => recorder.other_frame("welcome-again"),
                Frame::Other(kind) => recorder.other_frame(&kind),
            },
            Some(Ok(Message::Close(close))) => {
                let code =
                    close.map_or_else(|| "none".to_owned(), |c| u16::from(c.code).to_string());
                recorder.closed_by_server(&code);
                end.error = Some(format!("closed by the server ({code})"));
                return;
            }
            // Pings are answered by tungstenite on the next read.
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                recorder.closed_by_server("error");
                end.error = Some(format!("socket error: {err}"));
                return;
            }
            None => {
                recorder.closed_by_server("eof");
                end.error = Some("the connection ended".into());
                return;
            }
        }
    }
}

/// Connects `spec`, retrying a few times (each retry counted in `recorder`), and returns the
/// socket once its `welcome` has arrived.
pub(crate) async fn connect_with_retries(
    spec: &SocketSpec,
    recorder: &Recorder,
) -> anyhow::Result<(Ws, Welcome)> {
    let mut attempt = 1;
    loop {
        let result = tokio::time::timeout(ATTEMPT_TIMEOUT, connect(spec))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no welcome within {ATTEMPT_TIMEOUT:?}")));
        match result {
            Ok(connected) => return Ok(connected),
            Err(err) if attempt >= CONNECT_ATTEMPTS => return Err(err),
            Err(_) => {
                recorder.connect_retried();
                tokio::time::sleep(RETRY_DELAY * attempt).await;
                attempt += 1;
            }
        }
    }
}

async fn connect(spec: &SocketSpec) -> anyhow::Result<(Ws, Welcome)> {
    let socket = TcpSocket::new_v4().context("socket")?;
    socket
        .bind(SocketAddr::new(spec.source.into(), 0))
        .with_context(|| format!("binding {}", spec.source))?;
    let stream = socket
        .connect(spec.edge)
        .await
        .with_context(|| format!("connecting to {}", spec.edge))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let url = format!("ws://{}{}", spec.edge, spec.path_and_query);
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (mut ws, _) = client_async_with_config(url, stream, Some(config))
        .await
        .context("WebSocket handshake")?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match frame::parse(text.as_str()) {
                Frame::Welcome(welcome) => return Ok((ws, welcome)),
                _ => bail!("the first frame was not welcome: {}", short(text.as_str())),
            },
            Some(Ok(Message::Close(close))) => bail!("closed before welcome: {close:?}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => bail!("socket error before welcome: {err}"),
            None => bail!("the connection ended before welcome"),
        }
    }
}

/// At most 80 characters, for counting errors by kind.
fn short(text: &str) -> String {
    text.chars().take(80).collect()
}
