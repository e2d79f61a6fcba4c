//! Session control: what the publisher's session API tells the edges, and
//! the revocations it keeps for edges that start later.
//!
//! A disconnect or unsubscribe is a core NATS message on the user's
//! [`session_control_subject`](crate::subject::session_control_subject)
//! (every edge holds one subscription to all of them). A revocation is also
//! stored in the [`REVOCATIONS_BUCKET`] key-value bucket, keyed by
//! [`revocation_key`](crate::subject::revocation_key): every edge watches
//! it, so a token issued before the instant is refused on every edge, also
//! on one that was down when the call was made.

use serde::{Deserialize, Serialize};

use crate::ids::Namespace;

/// The key-value bucket of revocations; its entries live as long as the
/// longest token lifetime the publisher is told of.
pub const REVOCATIONS_BUCKET: &str = "herald_revocations";

/// A message on a user's session control subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Control {
    /// End every connection of the user with `REVOKED` (close 4010). A
    /// revocation rides along (as well as in the bucket), so an edge refuses
    /// the revoked tokens as soon as it has ended the connections.
    Disconnect {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revocation: Option<Revocation>,
    },
    /// Take the namespace from every connection of the user; they live on.
    Unsubscribe { namespace: Namespace },
}

/// A stored revocation: the user's tokens issued before `revoked_before`
/// are refused until `expires` (when no such token can be unexpired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Unix seconds: tokens with an earlier `iat` (or none) are refused.
    pub revoked_before: u64,
    /// Unix seconds: from then on the entry is moot (and the bucket drops it).
    pub expires: u64,
}

/// `POST /v1/users/{user}/disconnect`: `{}` or `{"revoke_tokens_issued_before": <unix seconds>}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_tokens_issued_before: Option<u64>,
}

/// `POST /v1/users/{user}/unsubscribe`: `{"namespace":"team-42"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeRequest {
    pub namespace: Namespace,
}

impl Revocation {
    /// Whether a token issued at `iat` (`None`: no `iat` claim) is refused
    /// at `now` (Unix seconds).
    pub fn refuses(&self, iat: Option<u64>, now: u64) -> bool {
        now < self.expires && iat.is_none_or(|iat| iat < self.revoked_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_refuses_earlier_and_unissued_tokens_until_it_expires() {
        let revocation = Revocation {
            revoked_before: 100,
            expires: 200,
        };
        assert!(revocation.refuses(Some(99), 150));
        assert!(revocation.refuses(None, 150));
        assert!(!revocation.refuses(Some(100), 150));
        assert!(!revocation.refuses(Some(99), 200));
    }

    #[test]
    fn control_messages_are_tagged_by_action() {
        let unsubscribe = Control::Unsubscribe {
            namespace: Namespace::parse("team-42").unwrap(),
        };
        let json = serde_json::to_string(&unsubscribe).unwrap();
        assert_eq!(json, r#"{"action":"unsubscribe","namespace":"team-42"}"#);
        assert_eq!(serde_json::from_str::<Control>(&json).unwrap(), unsubscribe);
        assert_eq!(
            serde_json::from_str::<Control>(r#"{"action":"disconnect"}"#).unwrap(),
            Control::Disconnect { revocation: None }
        );
    }
}
