//! Channels: `user:<id>` (every connection has its own) and `ns:<name>`.

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{IdError, Namespace, UserId};

/// A recipient channel of a notification.
///
/// On the wire a channel is a string: `user:alice@example.com`, `ns:team-42`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Channel(ChannelKind);

/// What a [`Channel`] addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelKind {
    User(UserId),
    Namespace(Namespace),
}

/// Why a string is not a channel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("a channel starts with `user:` or `ns:`")]
    UnknownPrefix,
    #[error(transparent)]
    Id(#[from] IdError),
}

const USER_PREFIX: &str = "user:";
const NAMESPACE_PREFIX: &str = "ns:";

// === impl Channel ===

impl Channel {
    /// The channel of one user.
    pub fn user(user: UserId) -> Self {
        Self(ChannelKind::User(user))
    }

    /// The channel of one namespace.
    pub fn namespace(namespace: Namespace) -> Self {
        Self(ChannelKind::Namespace(namespace))
    }

    /// What this channel addresses.
    pub fn kind(&self) -> &ChannelKind {
        &self.0
    }

    /// The namespace, when this is a namespace channel.
    pub fn as_namespace(&self) -> Option<&Namespace> {
        match &self.0 {
            ChannelKind::Namespace(ns) => Some(ns),
            ChannelKind::User(_) => None,
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            ChannelKind::User(user) => write!(f, "{USER_PREFIX}{user}"),
            ChannelKind::Namespace(ns) => write!(f, "{NAMESPACE_PREFIX}{ns}"),
        }
    }
}

impl FromStr for Channel {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<Self, ChannelError> {
        if let Some(user) = s.strip_prefix(USER_PREFIX) {
            Ok(Self::user(UserId::parse(user)?))
        } else if let Some(ns) = s.strip_prefix(NAMESPACE_PREFIX) {
            Ok(Self::namespace(Namespace::parse(ns)?))
        } else {
            Err(ChannelError::UnknownPrefix)
        }
    }
}

impl TryFrom<String> for Channel {
    type Error = ChannelError;
    fn try_from(s: String) -> Result<Self, ChannelError> {
        s.parse()
    }
}

impl From<Channel> for String {
    fn from(channel: Channel) -> String {
        channel.to_string()
    }
}

impl JsonSchema for Channel {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Channel".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(user|ns):.+$",
            "description": "`user:<user id>` or `ns:<namespace>`"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_through_their_string_form() {
        for s in ["user:alice@example.com", "user:a:b", "ns:team-42", "user:*"] {
            assert_eq!(s.parse::<Channel>().unwrap().to_string(), s);
        }
        assert_eq!(
            "room:1".parse::<Channel>(),
            Err(ChannelError::UnknownPrefix)
        );
        assert!("user:".parse::<Channel>().is_err());
    }
}
