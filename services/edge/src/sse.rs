//! `GET /v1/sse`: the same frames over server-sent events, for clients that
//! cannot open a WebSocket. Channels are fixed at connect (the user's own and
//! the `ns` list); there are no client frames, so no token refresh either.
//!
//! Each `event` carries an SSE `id` that is a complete resume cursor:
//! `<epoch>/<seq>.<seq>…`, one seq per channel in `welcome`'s order (for a
//! user-only stream, `<epoch>/41`). The browser sends it back as
//! `Last-Event-ID` when it reconnects, and each channel resumes from its own
//! seq, exactly as a WebSocket client's per-channel cursors do.
//!
//! Why not one seq? A single seq is only a safe cursor if every channel is
//! known to be complete up to it; a live copy lost on a quiet channel stays
//! undetected until the next reconcile pass, and a client resuming from a
//! later seq of another channel would skip it for good. Per-channel seqs make
//! that impossible.
//!
//! The deadlines hold while a write is pending, as on a WebSocket: a stream
//! whose body is not being read still ends at the token's `exp` (or after
//! the write timeout), and nothing is written to it after `exp`.
//!
//! Failures are `error` frames followed by the end of the stream (SSE has no
//! close codes): a client tells a refusal (`MISSING_TOKEN`, `INVALID_TOKEN`,
//! `EXPIRED_TOKEN`, `REVOKED`, `FORBIDDEN_NAMESPACE`: do not retry as is) from a
//! transient end (`SLOW_CONSUMER`, `NATS_UNAVAILABLE`, a `reconnect` frame, or
//! no frame at all: reconnect with `Last-Event-ID`) by the last frame's code.

use std::{collections::HashMap, convert::Infallible};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::stream;
use herald_shared::{error_code::ErrorCode, frames::ServerFrame};
use tokio::{
    sync::mpsc::{self, error::TrySendError},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    admission::{Admitted, admit, refuse_before_upgrade},
    attach::{self, Attachment, Hello},
    control::{Command, Commands},
    deadline::unix_deadline,
    disconnect::Disconnect,
    metrics::Transport,
    outbox::{OutboxReceiver, Queued, outbox},
    replay::Cursor,
    state::AppState,
};

/// Events buffered between the session and the HTTP body.
const BODY_BUFFER: usize = 16;
const LAST_EVENT_ID: &str = "last-event-id";

pub(crate) async fn sse(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_before_upgrade(&state, &headers) {
        return refused;
    }
    let (events, body) = mpsc::channel::<Event>(BODY_BUFFER);
    match admit(&state, &headers, &query).await {
        Err(refusal) => {
            if let Some(frame) = Disconnect::Refused(refusal).last_frame(Transport::Sse) {
                let _ = events.try_send(frame_event(&frame));
            }
        }
        Ok(admitted) => {
            let last_event_id = headers
                .get(LAST_EVENT_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let session = run(events, state.clone(), admitted, last_event_id);
            state.sessions.spawn(session.in_current_span());
        }
    }
    let body = stream::unfold(body, |mut body| async move {
        body.recv().await.map(|e| (Ok::<_, Infallible>(e), body))
    });
    let keep_alive = KeepAlive::new()
        .interval(state.config.heartbeat)
        .text("heartbeat");
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Sse::new(body).keep_alive(keep_alive),
    )
        .into_response()
}

/// One SSE stream's life: join, replay from the cursor, then write frames
/// until the client goes, the token expires, or the node drains.
async fn run(
    events: mpsc::Sender<Event>,
    state: AppState,
    admitted: Admitted,
    last_event_id: Option<String>,
) {
    let _connection = state.metrics.connection_opened(Transport::Sse);
    let channels = attach::channels(&admitted.user, &admitted.namespaces);
    let (outbox, mut receiver) =
        outbox(state.config.outbound_queue_bytes, CancellationToken::new());
    let span = tracing::info_span!("sse", user = %admitted.user);
    let replay_failed = CancellationToken::new();
    // The session API ends the stream through `revoked`.
    let revoked = CancellationToken::new();
    let (_registration, mut commands) =
        state
            .registry
            .register(&admitted.user, admitted.claims.iat, revoked.clone());
    // Leaves every channel when the stream ends, however it ends.
    let mut attachment = Attachment::new(state.clone(), outbox, replay_failed.clone());

    let mut notices = admitted.notices;
    let resume = match last_event_id
        .as_deref()
        .map(|id| parse_cursors(id, channels.len()))
    {
        None => None,
        Some(Some(resume)) => Some(resume),
        Some(None) => {
            notices.push(ServerFrame::Error {
                code: ErrorCode::ValidationFailed,
                message:
                    "Last-Event-ID does not match this stream's channels; delivery starts live"
                        .into(),
                r#ref: None,
            });
            None
        }
    };
    // Each channel resumes from its own seq in the cursor.
    let start = channels
        .into_iter()
        .enumerate()
        .map(|(i, channel)| {
            let cursor = resume.as_ref().map(|(epoch, seqs)| Cursor {
                since: seqs[i],
                epoch: Some(epoch.clone()),
            });
            (channel, cursor)
        })
        .collect();
    let hello = Hello {
        session_id: uuid::Uuid::new_v4(),
        user: admitted.user.clone(),
        token_exp: admitted.claims.exp,
    };
    let attached = attachment
        .attach(hello, start, notices)
        .instrument(span.clone())
        .await;
    // The stream's cursor starts where `welcome` says each channel starts.
    let cursors = match attached {
        Ok(seqs) => seqs,
        Err(failed) => return end(&events, &state, failed, false).await,
    };
    let mut stream = Stream {
        events,
        cursors,
        epoch: state.epoch.to_string(),
    };
    let control = Control {
        revoked: &revoked,
        commands: &mut commands,
        attachment: &mut attachment,
    };
    let (last, stuck) = stream
        .serve(
            &state,
            &mut receiver,
            admitted.claims.exp,
            &replay_failed,
            control,
        )
        .instrument(span)
        .await;
    end(&stream.events, &state, last, stuck).await;
}

/// Counts the end, and sends its last frame within its close timeout (at
/// once or not at all for a stream `stuck` in a write).
async fn end(events: &mpsc::Sender<Event>, state: &AppState, end: Disconnect, stuck: bool) {
    end.count(&state.metrics);
    let Some(frame) = end.last_frame(Transport::Sse) else {
        return;
    };
    let bound = end.close_timeout(Transport::Sse, stuck);
    if bound.is_zero() {
        // Not being read, and past its deadline: no waiting for room.
        let _ = events.try_send(frame_event(&frame));
    } else {
        let _ = tokio::time::timeout(bound, events.send(frame_event(&frame))).await;
    }
}

/// What the session API may do to a stream: end it, or take a namespace.
struct Control<'a> {
    revoked: &'a CancellationToken,
    commands: &'a mut Commands,
    attachment: &'a mut Attachment,
}

struct Stream {
    events: mpsc::Sender<Event>,
    /// The last seq sent per channel, in `welcome`'s order: the SSE `id`.
    cursors: Vec<u64>,
    epoch: String,
}

impl Stream {
    /// Writes frames until the stream must end; returns why, and whether it
    /// ended in the middle of a write.
    async fn serve(
        &mut self,
        state: &AppState,
        receiver: &mut OutboxReceiver,
        exp: u64,
        replay_failed: &CancellationToken,
        control: Control<'_>,
    ) -> (Disconnect, bool) {
        let overflowed = receiver.overflowed().clone();
        let expires_at = unix_deadline(exp);
        let expiry = tokio::time::sleep_until(expires_at);
        tokio::pin!(expiry);
        loop {
            tokio::select! {
                biased;
                () = state.draining.cancelled() => return (Disconnect::Draining, false),
                () = control.revoked.cancelled() => return (Disconnect::Revoked, false),
                () = overflowed.cancelled() => return (Disconnect::SlowConsumer, false),
                () = replay_failed.cancelled() => return (Disconnect::ReplayFailed, false),
                () = &mut expiry => return (Disconnect::TokenExpired, false),
                () = self.events.closed() => return (Disconnect::Gone, false),
                Some(command) = control.commands.recv() => {
                    let Command::Unsubscribe(namespace) = command;
                    control.attachment.revoke(namespace).await;
                }
                Some(frame) = receiver.recv() => {
                    // The timer may lag behind the clock: nothing is written
                    // once the token has expired.
                    if Instant::now() >= expires_at {
                        return (Disconnect::TokenExpired, false);
                    }
                    let len = frame.text.len();
                    let event = self.event_for(&frame);
                    let sent = match self.events.try_send(event) {
                        Ok(()) => true,
                        Err(TrySendError::Closed(_)) => false,
                        // The body is not being read: wait, within every deadline.
                        Err(TrySendError::Full(event)) => tokio::select! {
                            biased;
                            sent = self.events.send(event) => sent.is_ok(),
                            () = state.draining.cancelled() => return (Disconnect::Draining, false),
                            () = control.revoked.cancelled() => return (Disconnect::Revoked, false),
                            () = overflowed.cancelled() => return (Disconnect::SlowConsumer, false),
                            () = replay_failed.cancelled() => return (Disconnect::ReplayFailed, false),
                            () = &mut expiry => return (Disconnect::TokenExpired, true),
                            () = tokio::time::sleep(state.config.write_timeout) => return (Disconnect::WriteTimeout, true),
                        },
                    };
                    receiver.release(len);
                    if !sent {
                        return (Disconnect::Gone, false);
                    }
                    state.metrics.frames_written([frame.kind]);
                }
            }
        }
    }

    /// An event advances its channel's cursor and carries the whole cursor
    /// as `id`. Its channel is its slot: the stream's channels are the ones
    /// it started with, so slot `i` is `cursors[i]`.
    fn event_for(&mut self, frame: &Queued) -> Event {
        let event = Event::default().data(frame.text.as_str());
        let (Some(slot), Some(seq)) = (frame.channel, frame.kind.seq()) else {
            return event;
        };
        let Some(cursor) = self.cursors.get_mut(slot as usize) else {
            return event;
        };
        *cursor = (*cursor).max(seq);
        let seqs: Vec<String> = self.cursors.iter().map(u64::to_string).collect();
        event.id(format!("{}/{}", self.epoch, seqs.join(".")))
    }
}

/// `<epoch>/<seq>.<seq>…` with one seq per channel.
fn parse_cursors(id: &str, n_channels: usize) -> Option<(String, Vec<u64>)> {
    let (epoch, seqs) = id.rsplit_once('/')?;
    let seqs: Vec<u64> = seqs
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (seqs.len() == n_channels).then(|| (epoch.to_string(), seqs))
}

fn frame_event(frame: &ServerFrame) -> Event {
    Event::default().data(frame.to_json())
}

#[cfg(test)]
mod tests {
    use super::parse_cursors;

    #[test]
    fn cursors_need_an_epoch_and_one_seq_per_channel() {
        assert_eq!(parse_cursors("ep/41", 1), Some(("ep".into(), vec![41])));
        assert_eq!(
            parse_cursors("0190-ab/41.57", 2),
            Some(("0190-ab".into(), vec![41, 57]))
        );
        assert_eq!(parse_cursors("ep/41", 2), None);
        assert_eq!(parse_cursors("41", 1), None);
        assert_eq!(parse_cursors("ep/4x", 1), None);
    }
}
