//! The reply every domain service answers an `rpc.<method>` request with, and
//! the one the edge relays to the caller inside its `rpc_result` frame:
//! `{"result": <JSON>}` or `{"error": {"code", "message", "errors"}}`.

use std::{borrow::Cow, fmt};

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, de::Error as _};

use crate::error_code::{ErrorCode, FieldError};

/// The longest code a service may answer with.
const MAX_CODE_CHARS: usize = 64;

/// A service's answer to one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RpcReply {
    /// The call succeeded; any JSON the method defines.
    Result(serde_json::Value),
    /// The call failed; the caller's promise is rejected with this.
    Error(RpcError),
}

/// Why a call failed: a service's own code (`SLOT_TAKEN`) or an edge-side one
/// (`RPC_TIMEOUT`, `VALIDATION_FAILED`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RpcError {
    pub code: RpcCode,
    /// A sentence for people; never parsed.
    pub message: String,
    /// The failed rules, each with its path (`data.ends_at`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// An error code of a call: `^[A-Z][A-Z0-9_]{0,63}$`, so a service cannot
/// send the client free text, markup or a code too long to log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct RpcCode(String);

// === impl RpcReply ===

impl RpcReply {
    /// A success reply carrying `result`.
    ///
    /// # Panics
    /// When `result` cannot be represented as JSON (a map with non-string keys).
    pub fn ok(result: impl Serialize) -> Self {
        Self::Result(serde_json::to_value(result).expect("a reply result is JSON"))
    }

    /// A failure reply. `code` must match `^[A-Z][A-Z0-9_]{0,63}$`.
    ///
    /// # Errors
    /// The code when it does not.
    pub fn error(code: &str, message: impl Into<String>) -> Result<Self, String> {
        Ok(Self::Error(RpcError {
            code: RpcCode::parse(code)?,
            message: message.into(),
            errors: Vec::new(),
        }))
    }

    /// Reads a service's reply body.
    ///
    /// # Errors
    /// Why the body is not exactly one of the two shapes (the edge answers
    /// `RPC_FAILED` then).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|err| err.to_string())
    }

    /// The reply as a NATS message body.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("replies always serialize")
    }
}

// === impl RpcError ===

impl RpcError {
    /// An edge-side failure with Herald's own code.
    pub fn herald(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            errors: Vec::new(),
        }
    }
}

// === impl RpcCode ===

impl RpcCode {
    /// # Errors
    /// Why `code` is not `^[A-Z][A-Z0-9_]{0,63}$`.
    pub fn parse(code: &str) -> Result<Self, String> {
        let mut chars = code.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_uppercase());
        let rest_ok = chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && code.len() <= MAX_CODE_CHARS {
            Ok(Self(code.to_string()))
        } else {
            Err(format!(
                "an error code matches ^[A-Z][A-Z0-9_]{{0,63}}$; got {} bytes",
                code.len()
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<ErrorCode> for RpcCode {
    fn from(code: ErrorCode) -> Self {
        Self(code.as_str().to_string())
    }
}

impl PartialEq<ErrorCode> for RpcCode {
    fn eq(&self, other: &ErrorCode) -> bool {
        self.0 == other.as_str()
    }
}

impl PartialEq<&str> for RpcCode {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for RpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RpcCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(D::Error::custom)
    }
}

impl JsonSchema for RpcCode {
    fn schema_name() -> Cow<'static, str> {
        "RpcCode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Z][A-Z0-9_]{0,63}$",
            "description": "A service's own code, or one of Herald's (see error.json)"
        })
    }
}
