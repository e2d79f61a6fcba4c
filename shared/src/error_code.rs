//! The one error vocabulary of Herald: every code a client can see, with its
//! HTTP status and WebSocket close code, and the one JSON error body.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every error code on Herald's wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The body is not JSON; the message gives the line and column.
    MalformedJson,
    /// No token was sent.
    MissingToken,
    /// The token is malformed, badly signed, uses an algorithm not configured,
    /// has the wrong audience or issuer, or is not valid yet (`nbf`).
    InvalidToken,
    /// The token's `exp` has passed.
    ExpiredToken,
    /// The token is valid but lacks the scope for this operation.
    Forbidden,
    /// Too large: a body over its limit (64 KiB for events), or an event
    /// whose notifications would store more than the per-event bound
    /// (channels × payload). Retrying the same request cannot succeed.
    PayloadTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body or frame is well-formed JSON but breaks a rule; see `errors`.
    ValidationFailed,
    /// The event `type` is not registered.
    UnknownEventType,
    /// NATS or JetStream cannot be reached; retry after `Retry-After`.
    NatsUnavailable,
    /// The token does not allow this namespace.
    ForbiddenNamespace,
    /// The client reads too slowly; it was cut off and may resume.
    SlowConsumer,
    /// Too fast: a socket's client frames, or a service over its publish
    /// quota (events/s or bytes/s per token `sub`; 429 with `Retry-After`).
    RateLimited,
    /// A client frame that is not a JSON object with a string `type`.
    MalformedFrame,
    /// A client frame of a type the server does not know.
    UnknownFrame,
    /// The socket has joined as many namespaces as it may.
    TooManySubscriptions,
    /// The user has as many connections on this edge as it may
    /// (`--max-connections-per-user`); back off before reconnecting.
    TooManyConnections,
    /// The user's session was ended by the service (a disconnect or a token
    /// revocation through the publisher's session API), or the token was
    /// issued before a revocation. Do not reconnect with the same token.
    Revoked,
    /// An unexpected server-side failure; the message says nothing more.
    InternalError,
    /// An `rpc` frame names a method no edge knows.
    UnknownMethod,
    /// The token's `rpc` claim does not allow this method.
    ForbiddenMethod,
    /// No service answers this method right now (no responders on NATS, or
    /// NATS unreachable); retry later.
    RpcUnavailable,
    /// The service did not answer within `--rpc-timeout-ms`. The call may or
    /// may not have taken effect: refetch before retrying a change.
    RpcTimeout,
    /// The service answered something that is not a reply (`{"result"}` or
    /// `{"error"}` with a code matching `^[A-Z][A-Z0-9_]{0,63}$`).
    RpcFailed,
}

impl ErrorCode {
    /// Every code, for documentation and schema tests.
    pub const ALL: [ErrorCode; 24] = [
        Self::MalformedJson,
        Self::MissingToken,
        Self::InvalidToken,
        Self::ExpiredToken,
        Self::Forbidden,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::ValidationFailed,
        Self::UnknownEventType,
        Self::NatsUnavailable,
        Self::ForbiddenNamespace,
        Self::SlowConsumer,
        Self::RateLimited,
        Self::MalformedFrame,
        Self::UnknownFrame,
        Self::TooManySubscriptions,
        Self::TooManyConnections,
        Self::Revoked,
        Self::InternalError,
        Self::UnknownMethod,
        Self::ForbiddenMethod,
        Self::RpcUnavailable,
        Self::RpcTimeout,
        Self::RpcFailed,
    ];

    /// The stable wire string, e.g. `"INVALID_TOKEN"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "MALFORMED_JSON",
            Self::MissingToken => "MISSING_TOKEN",
            Self::InvalidToken => "INVALID_TOKEN",
            Self::ExpiredToken => "EXPIRED_TOKEN",
            Self::Forbidden => "FORBIDDEN",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::UnknownEventType => "UNKNOWN_EVENT_TYPE",
            Self::NatsUnavailable => "NATS_UNAVAILABLE",
            Self::ForbiddenNamespace => "FORBIDDEN_NAMESPACE",
            Self::SlowConsumer => "SLOW_CONSUMER",
            Self::RateLimited => "RATE_LIMITED",
            Self::MalformedFrame => "MALFORMED_FRAME",
            Self::UnknownFrame => "UNKNOWN_FRAME",
            Self::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
            Self::TooManyConnections => "TOO_MANY_CONNECTIONS",
            Self::Revoked => "REVOKED",
            Self::InternalError => "INTERNAL_ERROR",
            Self::UnknownMethod => "UNKNOWN_METHOD",
            Self::ForbiddenMethod => "FORBIDDEN_METHOD",
            Self::RpcUnavailable => "RPC_UNAVAILABLE",
            Self::RpcTimeout => "RPC_TIMEOUT",
            Self::RpcFailed => "RPC_FAILED",
        }
    }

    /// The HTTP status this code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::MalformedJson
            | Self::MalformedFrame
            | Self::UnknownFrame
            | Self::ForbiddenNamespace
            | Self::UnknownMethod => 400,
            Self::MissingToken | Self::InvalidToken | Self::ExpiredToken | Self::Revoked => 401,
            Self::Forbidden | Self::ForbiddenMethod => 403,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::ValidationFailed | Self::UnknownEventType => 422,
            Self::RateLimited | Self::TooManySubscriptions | Self::TooManyConnections => 429,
            Self::InternalError => 500,
            Self::NatsUnavailable | Self::SlowConsumer | Self::RpcUnavailable => 503,
            Self::RpcFailed => 502,
            Self::RpcTimeout => 504,
        }
    }

    /// The WebSocket close code that ends a connection for this reason, if any.
    pub fn close_code(self) -> Option<u16> {
        match self {
            Self::MissingToken => Some(4001),
            Self::InvalidToken => Some(4002),
            Self::ExpiredToken => Some(4003),
            Self::ForbiddenNamespace => Some(4004),
            Self::TooManyConnections => Some(4005),
            Self::SlowConsumer => Some(4008),
            Self::Revoked => Some(4010),
            Self::RateLimited => Some(4029),
            _ => None,
        }
    }

    /// Whether sending the same request again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::NatsUnavailable | Self::RateLimited | Self::InternalError | Self::RpcUnavailable
        )
    }
}

/// WebSocket close codes that are not an [`ErrorCode`]'s own (RFC 6455
/// section 7.4.1): how a connection ends for a reason the client cannot act on.
pub mod close {
    /// A refusal whose code has no close code of its own.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A client frame over the size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// An unexpected server-side failure.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The node is going away (draining): reconnect, to another node.
    pub const SERVICE_RESTART: u16 = 1012;
    /// A transient failure (NATS, the history): reconnect a little later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one JSON error body: `{"code": "...", "message": "...", "errors": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// A sentence for people; never parsed.
    pub message: String,
    /// The failed rules, for `VALIDATION_FAILED` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Where the body stopped parsing, for `MALFORMED_JSON` only (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// Where the body stopped parsing, for `MALFORMED_JSON` only (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// One failed validation rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldError {
    /// A dotted path into the body, e.g. `data.ends_at` or `audience.users[3]`.
    pub path: String,
    pub message: String,
}

impl ErrorBody {
    /// An error body with no field details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            errors: Vec::new(),
            line: None,
            column: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn close_codes_follow_the_spec_table() {
        let table = [
            (ErrorCode::MissingToken, 4001),
            (ErrorCode::InvalidToken, 4002),
            (ErrorCode::ExpiredToken, 4003),
            (ErrorCode::ForbiddenNamespace, 4004),
            (ErrorCode::TooManyConnections, 4005),
            (ErrorCode::SlowConsumer, 4008),
            (ErrorCode::Revoked, 4010),
            (ErrorCode::RateLimited, 4029),
        ];
        for (code, close) in table {
            assert_eq!(code.close_code(), Some(close), "{code}");
        }
        let n_with_close = ErrorCode::ALL
            .iter()
            .filter(|c| c.close_code().is_some())
            .count();
        assert_eq!(n_with_close, table.len());
    }
}
