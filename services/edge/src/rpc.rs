//! Client calls: an `rpc` frame checked against the token's `rpc` claim,
//! validated with the method's request type, sent as a NATS request to
//! `rpc.<method>` and answered with one `rpc_result` frame.
//!
//! The edge holds no domain logic: it only proves who calls (`Herald-User`
//! is the token's `sub`, never anything the client sent), refuses what no
//! service should see, and bounds what a socket may have pending. Each call
//! runs in a task of its own so a slow service never stalls the socket's
//! events; the tasks are aborted with the session.

use std::time::Instant;

use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use herald_shared::{
    error_code::ErrorCode,
    ids::UserId,
    jwt::UserClaims,
    rpc::{RpcError, RpcMethod, RpcReply, headers},
    subject::rpc_subject,
    trace_context,
};
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use crate::{metrics::Outcome, outbox::Outbox, state::AppState};

/// A socket's calls in flight. Empty (and allocation-free) until the first
/// call: most sockets never make one.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    running: Option<JoinSet<()>>,
}

/// Who calls: what the headers of every request of a session say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) user: &'a UserId,
    pub(crate) claims: &'a UserClaims,
    pub(crate) session_id: Uuid,
}

// === impl Calls ===

impl Calls {
    /// Starts a call of `method` (the frame's string), answered later through
    /// `outbox`; or refuses it at once, returning the reply to send.
    pub(crate) fn start(
        &mut self,
        state: &AppState,
        caller: Caller<'_>,
        outbox: &Outbox,
        r#ref: String,
        method: &str,
        data: serde_json::Value,
    ) -> Option<RpcReply> {
        let refuse = |method: Option<RpcMethod>, code: ErrorCode, error: RpcError| {
            state
                .metrics
                .rpc_finished(method, Outcome::Edge(code), None);
            Some(RpcReply::Error(error))
        };
        let Some(method) = RpcMethod::parse(method) else {
            let error = RpcError::herald(ErrorCode::UnknownMethod, "no such method");
            return refuse(None, ErrorCode::UnknownMethod, error);
        };
        if !caller.claims.allows_method(method) {
            let message = format!("the token does not allow `{method}`");
            let error = RpcError::herald(ErrorCode::ForbiddenMethod, message);
            return refuse(Some(method), ErrorCode::ForbiddenMethod, error);
        }
        if !fits_a_header(caller.user) {
            // NATS clients trim header values: ` alice` would reach the
            // service as `alice`.
            let message = "a user id with leading or trailing spaces cannot call methods";
            let error = RpcError::herald(ErrorCode::ForbiddenMethod, message);
            return refuse(Some(method), ErrorCode::ForbiddenMethod, error);
        }
        let request = match method.parse_data(data) {
            Ok(request) => request,
            Err(errors) => {
                let n = errors.len();
                let mut error = RpcError::herald(
                    ErrorCode::ValidationFailed,
                    format!(
                        "the call's data breaks {n} rule{}",
                        if n == 1 { "" } else { "s" }
                    ),
                );
                error.errors = errors;
                return refuse(Some(method), ErrorCode::ValidationFailed, error);
            }
        };
        let running = self.running.get_or_insert_with(JoinSet::new);
        while running.try_join_next().is_some() {}
        let max = state.config.max_rpc_in_flight;
        if running.len() >= max {
            let message = format!("at most {max} calls in flight per socket; retry when one ends");
            let error = RpcError::herald(ErrorCode::RateLimited, message);
            return refuse(Some(method), ErrorCode::RateLimited, error);
        }
        let span = tracing::info_span!(
            "rpc",
            method = method.as_str(),
            outcome = tracing::field::Empty
        );
        let mut headers = HeaderMap::new();
        headers.insert(headers::USER, caller.user.as_str());
        headers.insert(headers::SESSION, caller.session_id.to_string().as_str());
        headers.insert(headers::NODE, state.config.node_id.as_str());
        let call = Call {
            state: state.clone(),
            method,
            headers,
            body: request.to_body().into(),
        };
        let outbox = outbox.clone();
        running.spawn(
            async move {
                let reply = call.run().await;
                let frame = herald_shared::frames::ServerFrame::RpcResult { r#ref, reply };
                // Refused only when the socket is gone or overflowing: its end says why.
                outbox.push(frame.to_json().into());
            }
            .instrument(span),
        );
        None
    }
}

/// One call on its way to the service.
struct Call {
    state: AppState,
    method: RpcMethod,
    headers: HeaderMap,
    body: Bytes,
}

impl Call {
    /// Sends the request and maps whatever comes back to a reply; runs in
    /// the call's `rpc` span, whose context the request carries on.
    async fn run(mut self) -> RpcReply {
        if self.state.nats.connection_state() != async_nats::connection::State::Connected {
            // async-nats would buffer the request and send it on reconnect: the
            // service would then act on a call its caller saw time out.
            let code = ErrorCode::RpcUnavailable;
            let error = RpcError::herald(code, "the edge is not connected to NATS; retry later");
            tracing::Span::current().record("outcome", code.as_str());
            self.state
                .metrics
                .rpc_finished(Some(self.method), Outcome::Edge(code), None);
            return RpcReply::Error(error);
        }
        trace_context::inject(&mut self.headers);
        let started = Instant::now();
        let request = async_nats::Request::new()
            .headers(self.headers)
            .payload(self.body)
            .timeout(Some(self.state.config.rpc_timeout));
        let sent = self
            .state
            .nats
            .send_request(rpc_subject(self.method).to_string(), request)
            .await;
        // Half the socket's queue: an answer that would fill it would cut the
        // caller off as a slow consumer; it fails alone instead.
        let max_bytes = self.state.config.outbound_queue_bytes / 2;
        let (reply, outcome) = match sent {
            Ok(message) if message.payload.len() > max_bytes => {
                tracing::warn!(
                    bytes = message.payload.len(),
                    "A service's answer is too large."
                );
                let error = RpcError::herald(
                    ErrorCode::RpcFailed,
                    format!("the service's answer is over {max_bytes} bytes"),
                );
                (RpcReply::Error(error), Outcome::Edge(ErrorCode::RpcFailed))
            }
            Ok(message) => answer(&message.payload),
            Err(err) => {
                let code = match err.kind() {
                    RequestErrorKind::NoResponders => ErrorCode::RpcUnavailable,
                    RequestErrorKind::TimedOut => ErrorCode::RpcTimeout,
                    // Not connected, or the request did not fit NATS.
                    _ => {
                        tracing::warn!(error = %err, "An rpc request failed.");
                        ErrorCode::RpcUnavailable
                    }
                };
                let message = match code {
                    ErrorCode::RpcTimeout => "the service did not answer in time",
                    _ => "no service answers this method now; retry later",
                };
                let reply = RpcReply::Error(RpcError::herald(code, message));
                (reply, Outcome::Edge(code))
            }
        };
        let span = tracing::Span::current();
        span.record("outcome", outcome.as_str());
        self.state
            .metrics
            .rpc_finished(Some(self.method), outcome, Some(started.elapsed()));
        reply
    }
}

/// A service's reply body as the caller gets it: a reply of the agreed shape
/// as it is, anything else `RPC_FAILED`.
fn answer(body: &[u8]) -> (RpcReply, Outcome) {
    match RpcReply::parse(body) {
        Ok(reply @ RpcReply::Result(_)) => (reply, Outcome::Ok),
        Ok(reply @ RpcReply::Error(_)) => (reply, Outcome::ServiceError),
        Err(reason) => {
            tracing::warn!(%reason, "A service answered a call with something not a reply.");
            let error = RpcError::herald(ErrorCode::RpcFailed, "the service's answer was invalid");
            (RpcReply::Error(error), Outcome::Edge(ErrorCode::RpcFailed))
        }
    }
}

/// Whether `user` survives a NATS header as it is: header values are trimmed
/// by the clients that read them (control characters never reach a `UserId`).
fn fits_a_header(user: &UserId) -> bool {
    let id = user.as_str();
    id.trim() == id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_the_agreed_shape_pass_and_others_are_rpc_failed() {
        assert_eq!(answer(br#"{"result":[1]}"#).1, Outcome::Ok);
        assert_eq!(
            answer(br#"{"error":{"code":"SLOT_TAKEN","message":"m"}}"#).1,
            Outcome::ServiceError
        );
        for bad in [&b"<html>"[..], br#"{"error":{"code":"x y","message":"m"}}"#] {
            let (reply, outcome) = answer(bad);
            assert_eq!(outcome, Outcome::Edge(ErrorCode::RpcFailed));
            assert!(matches!(reply, RpcReply::Error(e) if e.code == ErrorCode::RpcFailed));
        }
    }

    #[test]
    fn ids_a_header_would_change_cannot_call() {
        assert!(fits_a_header(&UserId::parse("alice@example.com").unwrap()));
        assert!(fits_a_header(&UserId::parse("Zoë Ångström").unwrap()));
        assert!(!fits_a_header(&UserId::parse(" alice").unwrap()));
        assert!(!fits_a_header(&UserId::parse("alice ").unwrap()));
    }
}
