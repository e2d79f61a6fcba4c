//! What a WebSocket client asks of its session, frame by frame, under the
//! rate limit: `ping`, `subscribe` (with a cursor), `unsubscribe`, `auth`
//! (a token refresh, which may revoke namespaces) and `rpc` (handed to `rpc`).

use axum::extract::ws::Message;
use herald_shared::{
    channel::Channel,
    error_code::ErrorCode,
    frames::{ClientFrame, ServerFrame, parse_client_frame},
    ids::Namespace,
    jwt::UserClaims,
};
use tokio::time::Instant;
use tracing::Instrument;

use super::Session;
use crate::{disconnect::Disconnect, rate_limit::Verdict, replay::Cursor, rpc::Caller};

impl Session {
    /// Handles a text or binary frame from the client, read at `at`; `Some`
    /// ends the session.
    pub(super) async fn on_message(
        &mut self,
        message: Message,
        at: Instant,
        span: &tracing::Span,
    ) -> Option<Disconnect> {
        match self.limiter.check(at) {
            Verdict::Allow => {}
            Verdict::Refuse => {
                let retry = self.limiter.retry_after();
                self.send(ServerFrame::Error {
                    code: ErrorCode::RateLimited,
                    message: format!(
                        "too many frames; frame dropped, retry in {} ms",
                        retry.as_millis()
                    ),
                    r#ref: None,
                });
                return None;
            }
            Verdict::Close => return Some(Disconnect::RateLimited),
        }
        let Message::Text(text) = message else {
            self.send(ServerFrame::Error {
                code: ErrorCode::MalformedFrame,
                message: "frames are JSON text".into(),
                r#ref: None,
            });
            return None;
        };
        Box::pin(self.on_frame(&text).instrument(span.clone())).await
    }

    /// Handles one client text frame; `Some` ends the session.
    async fn on_frame(&mut self, text: &str) -> Option<Disconnect> {
        let frame = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err(err) => {
                self.send(err.into());
                return None;
            }
        };
        match frame {
            ClientFrame::Ping { r#ref } => self.send(ServerFrame::Pong { r#ref }),
            ClientFrame::Subscribe {
                r#ref,
                namespace,
                since,
                epoch,
            } => {
                let resume = since.map(|since| Cursor { since, epoch });
                self.subscribe(r#ref, namespace, resume).await;
            }
            ClientFrame::Unsubscribe { r#ref, namespace } => {
                let channel = Channel::namespace(namespace);
                // Before `unsubscribed` is queued: nothing of the channel follows it.
                self.attachment.leave(&channel).await;
                self.send(ServerFrame::Unsubscribed {
                    r#ref,
                    channel,
                    code: None,
                });
            }
            ClientFrame::Auth { r#ref, token } => {
                let verified =
                    crate::admission::verify_user(&self.state.config, token.expose()).await;
                match verified {
                    Ok(claims) if claims.sub == self.claims.sub => {
                        if self.revoked_token(&claims) {
                            return Some(Disconnect::Revoked);
                        }
                        self.registration.set_iat(claims.iat);
                        self.claims = claims;
                        self.drop_revoked_namespaces();
                        self.send(ServerFrame::Authenticated {
                            r#ref,
                            token_exp: self.claims.exp,
                        });
                    }
                    Ok(_) => {
                        self.state.metrics.auth_failed(ErrorCode::InvalidToken);
                        self.send(ServerFrame::Error {
                            code: ErrorCode::InvalidToken,
                            message: "the new token is for another user".into(),
                            r#ref,
                        });
                    }
                    Err(err) => {
                        self.state.metrics.auth_failed(err.code());
                        self.send(ServerFrame::Error {
                            code: err.code(),
                            message: err.to_string(),
                            r#ref,
                        });
                    }
                }
            }
            ClientFrame::Rpc {
                r#ref,
                method,
                data,
            } => {
                let caller = Caller {
                    user: &self.user,
                    claims: &self.claims,
                    session_id: self.session_id,
                };
                let outbox = self.attachment.outbox();
                let refused =
                    self.calls
                        .start(&self.state, caller, outbox, r#ref.clone(), &method, data);
                if let Some(reply) = refused {
                    self.send(ServerFrame::RpcResult { r#ref, reply });
                }
            }
        }
        None
    }

    async fn subscribe(
        &mut self,
        r#ref: Option<String>,
        namespace: Namespace,
        resume: Option<Cursor>,
    ) {
        let channel = Channel::namespace(namespace.clone());
        let refuse = |code, message: String| ServerFrame::Error {
            code,
            message,
            r#ref: r#ref.clone(),
        };
        if !self.claims.allows(&namespace) {
            return self.send(refuse(
                ErrorCode::ForbiddenNamespace,
                format!("the token does not allow `{namespace}`"),
            ));
        }
        if self.attachment.is_joined(&channel) {
            // Already joined: live delivery covers it; a cursor here would replay twice.
            let seq = self.state.hub.hw(&channel).unwrap_or(0);
            return self.send(ServerFrame::Subscribed {
                r#ref,
                channel,
                seq,
            });
        }
        let max = self.state.config.max_namespaces_per_socket;
        if self.attachment.namespaces().count() >= max {
            let message = format!("at most {max} namespaces per socket");
            return self.send(refuse(ErrorCode::TooManySubscriptions, message));
        }
        let joined = self.attachment.join(&channel, resume.is_some()).await;
        let hw = match joined {
            Ok(hw) => hw,
            Err(err) => {
                tracing::warn!(error = %err, "Joining a channel failed.");
                return self.send(refuse(
                    ErrorCode::NatsUnavailable,
                    "subscribing failed; retry".into(),
                ));
            }
        };
        // `subscribed` first: the replayed events (seq <= its `seq`) follow it.
        self.send(ServerFrame::Subscribed {
            r#ref,
            channel: channel.clone(),
            seq: hw,
        });
        if let Some(cursor) = resume {
            self.attachment.replay(channel, cursor, hw);
        }
    }

    /// Whether a refreshed token was issued before a revocation of its user.
    fn revoked_token(&self, claims: &UserClaims) -> bool {
        let revoked = self.state.registry.is_revoked(&self.user, claims.iat);
        if revoked {
            self.state.metrics.auth_failed(ErrorCode::Revoked);
        }
        revoked
    }

    /// After a token refresh: leave namespaces the new token no longer allows.
    fn drop_revoked_namespaces(&mut self) {
        let revoked: Vec<Namespace> = self
            .attachment
            .namespaces()
            .filter(|ns| !self.claims.allows(ns))
            .cloned()
            .collect();
        for namespace in revoked {
            let channel = Channel::namespace(namespace);
            self.attachment.drop_channel(&channel);
            self.send(ServerFrame::Error {
                code: ErrorCode::ForbiddenNamespace,
                message: format!("the new token does not allow `{channel}`; unsubscribed"),
                r#ref: None,
            });
            self.send(ServerFrame::Unsubscribed {
                r#ref: None,
                channel,
                code: None,
            });
        }
    }

    fn send(&self, frame: ServerFrame) {
        self.attachment.send(frame);
    }
}
