//! One WebSocket connection: the socket's loop, how its frames are written
//! and how it closes. Its channels are its `Attachment` (`attach`); what the
//! client asks of it, frame by frame, is in `commands`.
//!
//! One task per socket runs one `select!` over: the node draining, the
//! socket overflowing its queue, the token expiring, queued frames to write
//! (coalesced into one flush), and frames from the client. Every frame the
//! server sends goes through the outbox, so order is simply queue order.
//!
//! Every deadline holds while a write is pending, not only between writes
//! (`deadline`): the stop signal, token expiry, two silent heartbeats and the
//! write timeout.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use herald_shared::{ids::UserId, jwt::UserClaims};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod commands;
mod presence;

use crate::{
    admission::Admitted,
    attach::{self, Attachment, Hello},
    control::{Command, Commands, Registration},
    deadline::{Interrupted, Watch, unix_deadline},
    disconnect::Disconnect,
    frame::FrameKind,
    metrics::{Metrics, Transport},
    outbox::{OutboxReceiver, Queued, outbox},
    rate_limit::RateLimiter,
    state::AppState,
};

/// Most bytes written before a flush when a socket has a backlog.
const MAX_BATCH_BYTES: usize = 64 * 1024;

type Sink = SplitSink<WebSocket, Message>;

struct Session {
    state: AppState,
    user: UserId,
    claims: UserClaims,
    /// Its place among the node's connections: the session API ends it
    /// through `stop`, or sends it commands.
    registration: Registration,
    /// The channels, their replays, and the outbox their frames go to.
    attachment: Attachment,
    /// Cancelled when the session must end: the node drains (a child of its
    /// drain token), the outbox overflowed, or a replay failed. One signal for
    /// the loop to watch; `stopped` tells which.
    stop: CancellationToken,
    limiter: RateLimiter,
    /// Sent to services with each call (`Herald-Session`).
    session_id: uuid::Uuid,
    /// Calls waiting for their service; aborted with the session.
    calls: crate::rpc::Calls,
}

/// Runs an admitted socket until it closes, then releases its channels.
///
/// Not an `async fn`: the session is set up before the returned future
/// exists, so the task an idle socket keeps holds the session and the two
/// halves of the socket, not the socket and the admission as well.
pub(crate) fn run(
    socket: WebSocket,
    state: AppState,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send {
    let session_id = uuid::Uuid::new_v4();
    let span = tracing::info_span!("session", %session_id, user = %admitted.user);
    let connection = state.metrics.connection_opened(Transport::WebSocket);
    let stop = state.draining.child_token();
    let (outbox, receiver) = outbox(state.config.outbound_queue_bytes, stop.clone());
    let (registration, commands) =
        state
            .registry
            .register(&admitted.user, admitted.claims.iat, stop.clone());
    let mut session = Session {
        user: admitted.user.clone(),
        registration,
        attachment: Attachment::new(state.clone(), outbox, stop.clone()),
        claims: admitted.claims,
        stop,
        limiter: RateLimiter::new(
            state.config.client_frames_per_sec,
            state.config.client_frame_burst,
            state.config.rate_limit_violations,
            Instant::now(),
        ),
        session_id,
        calls: crate::rpc::Calls::default(),
        state,
    };
    let (mut sink, mut stream) = socket.split();
    let Admitted {
        user,
        namespaces,
        resume,
        notices,
        slot,
        ..
    } = admitted;
    let hello = Hello {
        session_id,
        token_exp: session.claims.exp,
        user: user.clone(),
    };
    // Every channel named at connect resumes from the one cursor given.
    let start: Vec<_> = attach::channels(&user, &namespaces)
        .into_iter()
        .map(|channel| (channel, resume.clone()))
        .collect();
    // Boxed: what the block below captures stays in the task's prefix for
    // the socket's whole life, though the start takes it at once.
    let attaching = Box::new((hello, start, notices));
    // The span is entered around what runs once or rarely (start, a client
    // frame, the close), not around the loop: entering it on every poll cost
    // about 4% of a broadcast's CPU. Those futures are also boxed, so the
    // task an idle socket keeps is small.
    async move {
        let _connection = connection;
        // Counts against `--max-connections-per-user` until the session ends.
        let _slot = slot;
        let (hello, start, notices) = *attaching;
        let start = session.attachment.attach(hello, start, notices);
        let end = Box::pin(start.instrument(span.clone())).await;
        let end = match end {
            Ok(_) => {
                session
                    .serve(&mut sink, &mut stream, receiver, commands, &span)
                    .await
            }
            Err(end) => {
                let finish = finish(&mut sink, None, end, false, &session.state.metrics);
                Box::pin(finish.instrument(span.clone())).await
            }
        };
        // Dropping the session's attachment leaves its channels (also if it panicked).
        span.in_scope(|| tracing::debug!(closed = end, "Session ended."));
    }
}

// === impl Session ===

impl Session {
    async fn serve(
        &mut self,
        sink: &mut Sink,
        stream: &mut SplitStream<WebSocket>,
        mut receiver: OutboxReceiver,
        mut commands: Commands,
        span: &tracing::Span,
    ) -> bool {
        let metrics = self.state.metrics.clone();
        // Created once and polled again and again: created per iteration, it
        // would take the token's lock and register (and unregister) a waiter
        // for every frame written.
        let stop = self.stop.clone();
        let stop_signal = stop.cancelled();
        tokio::pin!(stop_signal);
        let mut exp = self.claims.exp;
        let mut expires_at = unix_deadline(exp);
        let expiry = tokio::time::sleep_until(expires_at);
        tokio::pin!(expiry);
        let heartbeat_every = self.state.config.heartbeat;
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + heartbeat_every, heartbeat_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = Watch {
            last_heard: Instant::now(),
            held: None,
            silence: heartbeat_every * 2,
            write_timeout: self.state.config.write_timeout,
        };
        // Whether the session ended in the middle of a write.
        let mut stuck = false;
        let end = loop {
            if self.claims.exp != exp {
                // An `auth` frame moved the deadline.
                exp = self.claims.exp;
                expires_at = unix_deadline(exp);
                expiry.as_mut().reset(expires_at);
            }
            // A client frame read while a write was pending.
            if let Some(message) = watch.held.take() {
                if let Some(end) = self.on_message(message, watch.last_heard, span).await {
                    break end;
                }
                continue;
            }
            let written = tokio::select! {
                biased;
                // Frames first: while a socket has frames queued, the cold
                // branches are not polled at all. An overflow refuses every
                // push after it, so writing what is queued leaves no gap, and
                // the overflow is seen once the queue is empty or a write
                // blocks.
                Some(frame) = receiver.recv() => {
                    // The expiry branch may not be polled on a busy socket:
                    // nothing is written once the token has expired.
                    if Instant::now() >= expires_at {
                        break Disconnect::TokenExpired;
                    }
                    // Boxed: the write's state is a few hundred bytes that
                    // every idle socket's task would otherwise keep, for an
                    // allocation per batch of frames.
                    let write = Box::pin(write_batch(sink, &mut receiver, frame, &metrics, expires_at));
                    watch.write(write, stream, stop_signal.as_mut(), expiry.as_mut()).await
                }
                incoming = stream.next() => match incoming {
                    Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                        watch.last_heard = Instant::now();
                        if let Some(end) = self.on_message(message, watch.last_heard, span).await {
                            break end;
                        }
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        watch.last_heard = Instant::now();
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None => break Disconnect::Gone,
                    Some(Err(err)) => break read_error(err),
                },
                () = &mut stop_signal => break self.stopped(&receiver),
                () = &mut expiry => break Disconnect::TokenExpired,
                Some(command) = commands.recv() => {
                    let Command::Unsubscribe(namespace) = command;
                    Box::pin(self.attachment.revoke(namespace).instrument(span.clone())).await;
                    continue;
                }
                _ = heartbeat.tick() => {
                    // Silent for two intervals (no frame, no pong): the peer is gone.
                    if watch.last_heard.elapsed() >= watch.silence {
                        span.in_scope(|| tracing::debug!("Peer silent for two heartbeats; dropped."));
                        break Disconnect::Silent;
                    }
                    let ping = sink.send(Message::Ping(Default::default()));
                    watch.write(ping, stream, stop_signal.as_mut(), expiry.as_mut()).await
                }
            };
            let Err(interrupted) = written else {
                continue;
            };
            // Dropped mid-write by a deadline: the close gets a short bound.
            // (A stop keeps its own: a slow consumer's close may still get out.)
            stuck = matches!(
                interrupted,
                Interrupted::Expired | Interrupted::Silent | Interrupted::TimedOut
            );
            break match interrupted {
                Interrupted::Failed => Disconnect::Gone,
                Interrupted::Read(err) => read_error(err),
                Interrupted::Stop => self.stopped(&receiver),
                Interrupted::Expired => Disconnect::TokenExpired,
                Interrupted::Silent => {
                    span.in_scope(|| {
                        tracing::debug!("Peer silent for two heartbeats during a write; dropped.");
                    });
                    Disconnect::Silent
                }
                Interrupted::TimedOut => {
                    span.in_scope(|| tracing::debug!("A write timed out; dropped."));
                    Disconnect::WriteTimeout
                }
            };
        };
        let finish = finish(sink, Some(stream), end, stuck, &metrics);
        Box::pin(finish.instrument(span.clone())).await
    }

    /// Why `stop` was cancelled: the session API, an overflow, the node
    /// draining, or else a failed replay (nothing else cancels it).
    fn stopped(&self, receiver: &OutboxReceiver) -> Disconnect {
        if self.registration.is_revoked() {
            Disconnect::Revoked
        } else if receiver.has_overflowed() {
            Disconnect::SlowConsumer
        } else if self.state.draining.is_cancelled() {
            Disconnect::Draining
        } else {
            Disconnect::ReplayFailed
        }
    }
}

/// Writes `first` and whatever else is already queued (but nothing once
/// `until` has passed: the token's expiry), then flushes once; once flushed,
/// reports the written frames to the metrics.
async fn write_batch(
    sink: &mut Sink,
    receiver: &mut OutboxReceiver,
    first: Queued,
    metrics: &Metrics,
    until: Instant,
) -> Result<(), axum::Error> {
    let mut n_bytes = first.text.len();
    let mut kinds: Vec<FrameKind> = vec![first.kind];
    sink.feed(Message::Text(first.text)).await?;
    while n_bytes < MAX_BATCH_BYTES {
        // A `feed` above may have waited: what was queued since must not
        // follow if the token expired meanwhile.
        if Instant::now() >= until {
            break;
        }
        let Some(next) = receiver.try_recv() else {
            break;
        };
        n_bytes += next.text.len();
        kinds.push(next.kind);
        sink.feed(Message::Text(next.text)).await?;
    }
    let flushed = sink.flush().await;
    receiver.release(n_bytes);
    if flushed.is_ok() {
        metrics.frames_written(kinds);
    }
    flushed
}

/// Sends the last frame and the close frame, then waits for the peer's close
/// reply (the closing handshake), all bounded in time, and shortest for a
/// socket that was `stuck` in a write. `true` if a close was sent.
async fn finish(
    sink: &mut Sink,
    stream: Option<&mut SplitStream<WebSocket>>,
    end: Disconnect,
    stuck: bool,
    metrics: &Metrics,
) -> bool {
    end.count(metrics);
    let Some((code, reason)) = end.close() else {
        return false;
    };
    let last = end.last_frame(Transport::WebSocket);
    let bound = end.close_timeout(Transport::WebSocket, stuck);
    let closing = async {
        if let Some(frame) = last {
            sink.send(Message::Text(frame.to_json().into())).await?;
        }
        let close = CloseFrame {
            code,
            reason: reason.into(),
        };
        sink.send(Message::Close(Some(close))).await?;
        if let Some(stream) = stream {
            while let Some(Ok(message)) = stream.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        }
        Ok::<_, axum::Error>(())
    };
    matches!(tokio::time::timeout(bound, closing).await, Ok(Ok(())))
}

/// A read error: a frame over the limit ends with its own close code,
/// anything else quietly.
fn read_error(err: axum::Error) -> Disconnect {
    let too_big = err
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|err| matches!(err, tungstenite::Error::Capacity(_)));
    if too_big {
        Disconnect::FrameTooLarge
    } else {
        Disconnect::Gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what a function's returned future holds, without calling it.
    fn output_size<A, B, C, R>(_: fn(A, B, C) -> R) -> usize {
        size_of::<R>()
    }

    /// Every idle socket keeps its session's future for its whole life: what
    /// it holds across the loop's wait (a copy of the shared state, a write
    /// in progress) is paid per socket. It was 2.5 KiB (unoptimized) with
    /// two copies of the state and the write inline; 1.5 KiB once they went.
    #[test]
    fn an_idle_session_s_future_stays_small() {
        let size = output_size(run);
        assert!(size <= 1792, "the session's future holds {size} bytes");
        assert_eq!(size_of::<AppState>(), size_of::<usize>());
    }
}
