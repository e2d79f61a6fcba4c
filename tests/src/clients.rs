//! Clients as a domain service and a browser would be: tokens, HTTP, WebSocket.

use futures_util::{SinkExt, StreamExt};
use herald_shared::frames::ServerFrame;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use crate::WAIT;

/// The HS256 secret the test services verify with.
pub const TEST_SECRET: &str = "herald-test-secret";

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Signs `claims` with HS256 and `secret`.
pub fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing a token")
}

/// Every byte but ASCII letters and digits percent-encoded: any text as one
/// query value or path segment, hostile ids included.
pub fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A user token for the edge: `sub`, audience `herald`, the `ns` grants, an hour to live.
pub fn user_token(sub: &str, ns: &[&str]) -> String {
    sign(&user_claims(sub, ns), TEST_SECRET)
}

pub fn user_claims(sub: &str, ns: &[&str]) -> Value {
    json!({ "sub": sub, "aud": "herald", "exp": now() + 3600, "iat": now(), "ns": ns })
}

/// A service token for the publisher with the `events:publish` scope.
pub fn service_token() -> String {
    sign(&service_claims(), TEST_SECRET)
}

pub fn service_claims() -> Value {
    json!({ "sub": "calendar-service", "aud": "herald-publisher", "exp": now() + 3600,
            "scope": "events:read events:publish" })
}

/// A valid `calendar.event.updated` envelope for these recipients.
pub fn calendar_event(id: &str, users: &[&str], namespaces: &[&str]) -> Value {
    json!({
        "id": id,
        "type": "calendar.event.updated",
        "source": "calendar-service",
        "time": "2026-11-26T10:00:00Z",
        "audience": { "users": users, "namespaces": namespaces },
        "data": { "calendar_id": "cal_1", "event_id": "evt_9", "title": "Standup",
                  "starts_at": "2026-11-27T09:00:00Z", "ends_at": "2026-11-27T09:15:00Z",
                  "changes": ["starts_at"] }
    })
}

/// A publisher's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The status, headers and JSON body (`null` if none) of `response`.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Self {
            status,
            body,
            headers,
        }
    }
}

/// `POST /v1/events` with a bearer token and a JSON body.
pub async fn post_event(publisher_url: &str, token: &str, body: &Value) -> Answer {
    post_raw(
        publisher_url,
        Some(token),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

/// `POST /v1/events` with everything under the caller's control.
pub async fn post_raw(
    publisher_url: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!("{publisher_url}/v1/events"))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = tokio::time::timeout(WAIT, request.send())
        .await
        .expect("publisher answers in time")
        .expect("post");
    Answer::read(response).await
}

/// A browser-like WebSocket client.
#[derive(Debug)]
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a socket ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl WsClient {
    /// Opens `url`; panics if the handshake fails.
    pub async fn connect(url: &str) -> Self {
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("handshake in time")
            .expect("handshake");
        Self { socket }
    }

    /// Opens `url` over a socket with a small kernel receive buffer, as a
    /// browser on a slow network looks to the server: unread frames back up
    /// on the server quickly instead of vanishing into megabytes of buffer.
    pub async fn connect_with_small_receive_buffer(url: &str, addr: std::net::SocketAddr) -> Self {
        Self::connect_with_receive_buffer(url, addr, 4096).await
    }

    /// Opens `url` over a socket whose kernel receive buffer (SO_RCVBUF) is
    /// `bytes`, set before connecting so the advertised window is small too.
    pub async fn connect_with_receive_buffer(
        url: &str,
        addr: std::net::SocketAddr,
        bytes: u32,
    ) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
        Self { socket }
    }

    /// Opens `url`, or says why not.
    pub async fn try_connect(url: &str) -> Result<Self, String> {
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await {
            Ok(Ok((socket, _))) => Ok(Self { socket }),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("handshake timed out".into()),
        }
    }

    /// The next server frame, or why the connection ended (waits without bound
    /// while the connection is open: callers bound the whole test).
    pub async fn try_next_frame(&mut self) -> Result<ServerFrame, String> {
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text)
                        .map_err(|e| format!("bad frame {text}: {e}"));
                }
                Some(Ok(Message::Close(close))) => return Err(format!("closed: {close:?}")),
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(err.to_string()),
                None => return Err("connection ended".into()),
            }
        }
    }

    /// Every frame the socket still yields, until it closes, breaks, or stays
    /// quiet for `quiet`: what a client that stopped reading finds later.
    pub async fn frames_until_end(&mut self, quiet: std::time::Duration) -> Vec<ServerFrame> {
        let mut frames = Vec::new();
        while let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, self.socket.next()).await {
            match message {
                Message::Text(text) => frames.push(
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad frame {text}: {e}")),
                ),
                Message::Close(_) => break,
                _ => {}
            }
        }
        frames
    }

    /// Connects and reads the `welcome` frame.
    pub async fn connect_welcomed(url: &str) -> (Self, ServerFrame) {
        let mut client = Self::connect(url).await;
        let welcome = client.next_frame().await;
        assert!(
            matches!(welcome, ServerFrame::Welcome { .. }),
            "expected welcome, got {welcome:?}"
        );
        (client, welcome)
    }

    /// The next server frame; panics on a close, an error or the time bound.
    pub async fn next_frame(&mut self) -> ServerFrame {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a readable frame");
            match message {
                Message::Text(text) => {
                    return serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("bad frame {text}: {e}"));
                }
                Message::Close(close) => panic!("closed while waiting for a frame: {close:?}"),
                _ => continue,
            }
        }
    }

    /// The next `event` frame, skipping nothing: panics if another frame comes first.
    pub async fn next_event(&mut self) -> ServerFrame {
        let frame = self.next_frame().await;
        assert!(
            matches!(frame, ServerFrame::Event { .. }),
            "expected an event, got {frame:?}"
        );
        frame
    }

    /// Reads until the server closes; returns the frames before the close and the close.
    pub async fn until_closed(&mut self) -> (Vec<ServerFrame>, Closed) {
        let mut frames = Vec::new();
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("a close in time");
            match message {
                Some(Ok(Message::Text(text))) => {
                    frames.push(serde_json::from_str(&text).expect("frame"))
                }
                Some(Ok(Message::Close(Some(close)))) => {
                    let closed = Closed {
                        code: close.code.into(),
                        reason: close.reason.to_string(),
                    };
                    return (frames, closed);
                }
                Some(Ok(Message::Close(None))) => panic!("closed without a code"),
                Some(Ok(_)) => continue,
                Some(Err(err)) => panic!("socket error before a close frame: {err}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.socket
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// Sends a ping frame with a `ref` and waits for its pong: everything the
    /// server queued before it has been received by then.
    pub async fn round_trip(&mut self, r#ref: &str) -> Vec<ServerFrame> {
        self.send_json(&json!({ "type": "ping", "ref": r#ref }))
            .await;
        let mut before = Vec::new();
        loop {
            match self.next_frame().await {
                ServerFrame::Pong { r#ref: Some(got) } if got == r#ref => return before,
                other => before.push(other),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
        // Read to the end so the server sees a clean close.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.socket.next()).await {}
    }
}
