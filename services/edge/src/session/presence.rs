//! The client's presence frames: `presence` (who is in a namespace now) and
//! the `presence: true` of `subscribe` (diffs from then on). Both need the
//! token's `presence` claim for the namespace.

use herald_shared::{channel::Channel, error_code::ErrorCode, frames::ServerFrame, ids::Namespace};

use super::Session;

impl Session {
    /// Answers a `presence` frame from the stream.
    pub(super) async fn presence(&mut self, r#ref: Option<String>, namespace: Namespace) {
        if !self.claims.allows_presence(&namespace) {
            return self.attachment.send(ServerFrame::Error {
                code: ErrorCode::ForbiddenNamespace,
                message: format!("the token does not allow the presence of `{namespace}`"),
                r#ref,
            });
        }
        match self.state.presence.read(&namespace).await {
            Ok(roster) => self.attachment.send(ServerFrame::Presence {
                r#ref,
                channel: Channel::namespace(namespace),
                members: roster.members,
                truncated: roster.truncated,
            }),
            Err(err) => {
                tracing::warn!(error = %err, "Reading presence failed.");
                self.attachment.send(ServerFrame::Error {
                    code: ErrorCode::NatsUnavailable,
                    message: "presence could not be read; retry".into(),
                    r#ref,
                });
            }
        }
    }

    /// For a `subscribe` with `presence: true`, once the namespace is joined.
    pub(super) async fn watch_presence(&mut self, r#ref: Option<String>, namespace: &Namespace) {
        if let Err(err) = self.attachment.watch_presence(namespace).await {
            tracing::warn!(error = %err, "Watching presence failed.");
            self.attachment.send(ServerFrame::Error {
                code: ErrorCode::NatsUnavailable,
                message: "presence diffs could not be started; subscribe again".into(),
                r#ref,
            });
        }
    }
}
