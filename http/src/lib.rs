//! herald-http: the HTTP/1 server loop both services run, in place of
//! `axum::serve`, which bounds nothing a client does before its response.
//!
//! These bounds, from [`HttpLimits`], keep clients that connect and stall
//! from holding sockets and memory for ever:
//! - a header read timeout (hyper's, with tokio's timer): from accept, or from
//!   the end of the previous response, the request head must arrive in time,
//!   so a silent connection, half a request line or headers trickling in one
//!   line at a time are closed;
//! - a request timeout: from the head to the response head, so a body that
//!   trickles in gets 408 and the connection is closed (a streamed response,
//!   such as SSE, or an upgraded WebSocket is not bounded by it);
//! - a write timeout: a write that makes no progress for that long (a client
//!   that stopped reading a response, an SSE stream or a WebSocket) closes
//!   the connection, so a socket is freed even after its session has ended;
//! - a bound on the request head ([`MAX_REQUEST_HEAD_BYTES`]), so a stalled
//!   head pins at most that much memory;
//! - a cap on pending connections, accepted but not yet through their first
//!   request, so stalled clients cannot take every file descriptor the
//!   admitted ones need. At the cap the loop stops accepting: a burst (a
//!   reconnect storm) waits in the listen backlog for slots, which free in
//!   milliseconds. Only when the cap stays full with no slot freed for
//!   [`SATURATED_AFTER`] (stalled clients hold it) are new connections
//!   accepted and closed at once, until a slot frees.
//!
//! It lives outside `herald-shared`, which never depends on axum and opens
//! no sockets.

use std::{
    convert::Infallible,
    future::Future,
    pin::pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    serve::Listener,
};
use herald_shared::config::HttpLimits;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_service::Service as _;

use crate::write_timeout::WriteTimeout;

mod write_timeout;

/// The most a connection may buffer of a request head (and of a response
/// before it waits for the socket); a longer head gets 431. hyper's default,
/// ~400 KB, times the pending cap is what stalled clients could pin. The
/// largest head Herald needs is a user token at the grant bound: 256
/// namespaces of the longest (128 bytes) make ~45 KB of token.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// How long the pending cap may stay full, with no slot freed, before new
/// connections are closed at once rather than left in the listen backlog.
/// Far above a handshake's milliseconds, far below the header timeout.
pub const SATURATED_AFTER: Duration = Duration::from_secs(1);

/// At most one warning per this long while the pending cap turns clients away.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` (HTTP/1.1 with upgrades) within `limits`
/// until `shutdown` completes; `shutdown` runs while connections are still
/// accepted. Then it stops accepting, lets every connection finish its
/// request in hand, and returns once they have closed. Upgraded connections
/// are the router's to track: they leave this loop at the upgrade.
pub async fn serve<L: Listener>(
    mut listener: L,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    let pending = Arc::new(Semaphore::new(
        limits.max_pending_connections.min(Semaphore::MAX_PERMITS),
    ));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut turned_away = TurnedAway::default();
    let mut last_slot = tokio::time::Instant::now();
    let mut shutdown = pin!(shutdown);
    loop {
        // A slot for the next connection, taken before accepting it.
        let slot = tokio::select! {
            slot = next_slot(&pending, &mut last_slot) => slot,
            () = &mut shutdown => break,
        };
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // A slot may have freed while this waited for a connection.
        let slot = slot.or_else(|| {
            let permit = pending.clone().try_acquire_owned().ok()?;
            last_slot = tokio::time::Instant::now();
            Some(permit)
        });
        let Some(permit) = slot else {
            // Dropping it closes it: the cheapest answer, and the client retries.
            drop(io);
            turned_away.count(limits.max_pending_connections);
            continue;
        };
        let connection = Connection {
            router: router.clone(),
            request_timeout: limits.request_timeout,
            write_timeout: limits.write_timeout,
            pending: Arc::new(Mutex::new(Some(permit))),
        };
        connections.spawn(connection.serve(&http1, io, stop.clone()));
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// A free slot under the pending cap, as soon as there is one; `None` once
/// the cap has been full for [`SATURATED_AFTER`] since the last slot was
/// taken, and at once after that, until a slot frees.
async fn next_slot(
    pending: &Arc<Semaphore>,
    last_slot: &mut tokio::time::Instant,
) -> Option<OwnedSemaphorePermit> {
    let deadline = *last_slot + SATURATED_AFTER;
    // `timeout_at` tries the semaphore first, so a free slot is taken even
    // past the deadline.
    match tokio::time::timeout_at(deadline, pending.clone().acquire_owned()).await {
        Ok(Ok(permit)) => {
            *last_slot = tokio::time::Instant::now();
            Some(permit)
        }
        // Timed out; the semaphore is never closed.
        _ => None,
    }
}

/// One accepted connection's share of the server.
struct Connection {
    router: Router,
    request_timeout: Duration,
    write_timeout: Duration,
    /// Held until the connection's first response head (or upgrade): its
    /// slot under the pending cap.
    pending: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl Connection {
    /// Serves requests until the client or a timeout closes the connection,
    /// or it upgrades; on `stop`, finishes the request in hand and closes.
    fn serve<I>(
        self,
        http1: &http1::Builder,
        io: I,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            router,
            request_timeout,
            write_timeout,
            pending,
        } = self;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut router = router.clone();
            let pending = pending.clone();
            async move {
                let answer =
                    tokio::time::timeout(request_timeout, router.call(request.map(Body::new)))
                        .await;
                // Through its first request: no longer pending.
                drop(
                    pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take(),
                );
                Ok::<_, Infallible>(match answer {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => request_timed_out(),
                })
            }
        });
        // A write that makes no progress for `write_timeout` fails, and the
        // connection with it: hyper itself would wait for ever on a client
        // that stopped reading. It stays on the socket after an upgrade.
        let io = WriteTimeout::new(io, write_timeout);
        let connection = http1
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        async move {
            let mut connection = pin!(connection);
            let mut stopping = pin!(stop.cancelled());
            let mut stopped = false;
            loop {
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(err) = served {
                            tracing::debug!(error = %err, "HTTP connection closed on an error.");
                        }
                        return;
                    }
                    () = &mut stopping, if !stopped => {
                        stopped = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// The request took longer than the request timeout: its handler is
/// dropped, and the connection closes after this answer.
fn request_timed_out() -> Response {
    (StatusCode::REQUEST_TIMEOUT, [(header::CONNECTION, "close")]).into_response()
}

/// Connections closed at the pending cap, for a warning now and then.
#[derive(Default)]
struct TurnedAway {
    n_since_warning: u64,
    warned_at: Option<Instant>,
}

impl TurnedAway {
    fn count(&mut self, max_pending_connections: usize) {
        self.n_since_warning += 1;
        if self
            .warned_at
            .is_some_and(|warned_at| warned_at.elapsed() < WARN_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            max_pending_connections,
            n_closed = self.n_since_warning,
            "Too many connections without a complete request; closing new ones."
        );
        self.n_since_warning = 0;
        self.warned_at = Some(Instant::now());
    }
}
