//! `GET /v1/ws`: the WebSocket upgrade. An admitted socket goes to a
//! tracked session; a refused one is told why and closed with the matching code.

use std::{collections::HashMap, pin::Pin};

use axum::{
    extract::{
        Query, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::HeaderMap,
    response::Response,
};
use herald_shared::frames::MAX_CLIENT_FRAME_BYTES;

use crate::{
    admission::{Refusal, admit, refuse_before_upgrade},
    disconnect::Disconnect,
    metrics::Transport,
    session,
    state::AppState,
};

/// tungstenite reads into a buffer of this size, which an idle socket keeps; its
/// default (128 KiB, zero-filled on first read) would cost more than everything
/// else a socket holds. Client frames are small (`ping`, `subscribe`, `rpc`
/// are a few hundred bytes): once a frame's header is read, tungstenite
/// reserves the whole frame, so a larger one (an `auth` with a 1 KB token, up
/// to the 16 KiB limit) costs only a few more reads of this size.
const READ_BUFFER_BYTES: usize = 256;
/// Frames are coalesced up to this many bytes before a write.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

pub(crate) async fn websocket(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = refuse_before_upgrade(&state, &headers) {
        return refused;
    }
    // Boxed: the upgrade's task keeps what its callback captured for the
    // socket's whole life (about 200 bytes of admission), though the
    // callback hands it on at once.
    let admission = Box::new(admit(&state, &headers, &query).await);
    let sessions = state.sessions.clone();
    upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(state.config.outbound_queue_bytes + WRITE_BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_FRAME_BYTES)
        .max_frame_size(MAX_CLIENT_FRAME_BYTES)
        .on_upgrade(move |socket| {
            // Chosen here rather than in an `async` block, which would keep
            // the socket and the admission in the task for its whole life.
            let session: Pin<Box<dyn Future<Output = ()> + Send>> = match *admission {
                Ok(admitted) => Box::pin(session::run(socket, state, admitted)),
                Err(refusal) => Box::pin(refuse(socket, refusal)),
            };
            sessions.track_future(session)
        })
}

/// Sends the refusal's `error` frame and closes with its close code.
async fn refuse(mut socket: WebSocket, refusal: Refusal) {
    tracing::debug!(code = %refusal.code, "Refused a WebSocket.");
    let end = Disconnect::Refused(refusal);
    if let Some(frame) = end.last_frame(Transport::WebSocket) {
        let _ = socket.send(Message::Text(frame.to_json().into())).await;
    }
    if let Some((code, reason)) = end.close() {
        let close = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = socket.send(Message::Close(Some(close))).await;
    }
}
