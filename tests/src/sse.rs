//! A server-sent-events client, as a browser's `EventSource` reads a stream:
//! `id:` and `data:` fields, comments, events ended by a blank line.

use futures_util::StreamExt;
use herald_shared::frames::ServerFrame;

use crate::WAIT;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub frame: ServerFrame,
}

/// What the stream yielded.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    Event(SseEvent),
    /// A `:` comment line (heartbeats).
    Comment(String),
    /// The server ended the stream.
    End,
}

pub struct SseClient {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
    pub status: u16,
}

impl std::fmt::Debug for SseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseClient")
            .field("status", &self.status)
            .finish()
    }
}

impl SseClient {
    /// `GET url`, with `Last-Event-ID` when given.
    pub async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        let mut request = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = tokio::time::timeout(WAIT, request.send())
            .await
            .expect("answer in time")
            .expect("get");
        let status = response.status().as_u16();
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
            status,
        }
    }

    /// The next event or comment, or the end of the stream (bounded wait).
    pub async fn next(&mut self) -> SseItem {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = Vec::new();
                let mut comment = None;
                for line in block.lines() {
                    if let Some(rest) = line.strip_prefix(':') {
                        comment = Some(rest.trim().to_string());
                    } else if let Some(rest) = line.strip_prefix("id:") {
                        id = Some(rest.trim_start().to_string());
                    } else if let Some(rest) = line.strip_prefix("data:") {
                        data.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
                    }
                }
                if data.is_empty() {
                    if let Some(comment) = comment {
                        return SseItem::Comment(comment);
                    }
                    continue;
                }
                let frame = serde_json::from_str(&data.join("\n")).expect("a frame in data");
                return SseItem::Event(SseEvent { id, frame });
            }
            match tokio::time::timeout(WAIT, self.body.next())
                .await
                .expect("stream data in time")
            {
                Some(Ok(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(_)) | None => return SseItem::End,
            }
        }
    }

    /// The next event, skipping comments; panics at the end of the stream.
    pub async fn next_event(&mut self) -> SseEvent {
        loop {
            match self.next().await {
                SseItem::Event(event) => return event,
                SseItem::Comment(_) => continue,
                SseItem::End => panic!("the stream ended"),
            }
        }
    }
}

/// Opens `GET <path_and_query>` on `addr` as an SSE client whose kernel
/// receive buffer is `receive_buffer` bytes, and returns the socket unread:
/// a client that stopped reading. Read it later with [`read_until_quiet`].
pub async fn open_unread(
    addr: std::net::SocketAddr,
    path_and_query: &str,
    receive_buffer: u32,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(receive_buffer)
        .expect("SO_RCVBUF");
    let mut stream = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    stream
}

/// Everything `stream` still yields until it ends or stays quiet for `quiet`.
pub async fn read_until_quiet(
    stream: &mut tokio::net::TcpStream,
    quiet: std::time::Duration,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut got = Vec::new();
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(quiet, stream.read(&mut buffer)).await {
        got.extend_from_slice(&buffer[..n]);
    }
    got
}
