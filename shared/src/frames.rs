//! WebSocket (and SSE) frames: JSON text, one object per frame, tagged by `type`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    channel::Channel,
    error_code::ErrorCode,
    ids::{EventId, Namespace, UserId},
    rpc::RpcReply,
    secret::Secret,
    timestamp::Timestamp,
};

/// The largest client frame an edge reads; a larger one closes the socket with 1009.
pub const MAX_CLIENT_FRAME_BYTES: usize = 16 * 1024;

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame of every accepted connection.
    Welcome {
        session_id: String,
        user: UserId,
        node: String,
        /// The notification stream's epoch; a cursor is only valid with it.
        epoch: String,
        heartbeat_ms: u64,
        channels: Vec<Channel>,
        /// The token's `exp`, in Unix seconds.
        token_exp: u64,
        /// Per channel, the seq above which live delivery starts (the channel's
        /// latest at connect, or the cursor it resumed from). A client with no
        /// cursor for a channel takes this as one, so its next reconnect
        /// resumes the channel instead of starting live.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        seqs: BTreeMap<Channel, u64>,
    },
    /// One notification of a joined channel.
    Event {
        channel: Channel,
        /// The resume cursor of this channel.
        seq: u64,
        id: EventId,
        event_type: String,
        source: String,
        time: Timestamp,
        data: serde_json::Value,
    },
    Subscribed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        channel: Channel,
        /// The channel's latest seq at subscribe time (0 when it has none).
        seq: u64,
    },
    Unsubscribed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        channel: Channel,
        /// Why the server unsubscribed the connection on its own (no `ref`):
        /// `REVOKED` when a service took the namespace from the user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
    },
    Authenticated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        token_exp: u64,
    },
    /// Non-fatal unless a close follows.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
    },
    /// The client's cursor is older than the stream holds, or of another
    /// epoch: it must refetch state from its source of truth. Live delivery goes on.
    HistoryTruncated { channel: Channel, first_seq: u64 },
    /// The node is going away; reconnect (to any node) at once.
    Reconnect { reason: String },
    /// The answer to one `rpc` frame, with its `ref`: `result`, or `error`
    /// with a code (the service's own, or an edge-side one such as
    /// `RPC_TIMEOUT`) and, for `VALIDATION_FAILED`, `errors[].path`.
    RpcResult {
        r#ref: String,
        #[serde(flatten)]
        reply: RpcReply,
    },
}

/// A frame the client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Subscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        namespace: Namespace,
        /// Resume: replay this channel's notifications with a greater seq first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    Unsubscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        namespace: Namespace,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
    },
    /// A fresh token for the open connection (same `sub`).
    Auth {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<String>,
        token: Secret,
    },
    /// A call of a registered method, answered by one `rpc_result` with the
    /// same `ref` (the socket lives on whatever the outcome).
    Rpc {
        r#ref: String,
        method: String,
        #[serde(default)]
        data: serde_json::Value,
    },
}

const CLIENT_FRAME_TYPES: [&str; 5] = ["subscribe", "unsubscribe", "ping", "auth", "rpc"];

/// Why a client frame was refused; the connection lives on.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    /// The frame's `ref`, when it had a readable one.
    pub r#ref: Option<String>,
}

impl From<FrameError> for ServerFrame {
    fn from(err: FrameError) -> Self {
        ServerFrame::Error {
            code: err.code,
            message: err.message,
            r#ref: err.r#ref,
        }
    }
}

/// Parses one client text frame.
///
/// # Errors
/// `MALFORMED_FRAME` for anything but a JSON object with a string `type`,
/// `UNKNOWN_FRAME` for a type the server does not know, `VALIDATION_FAILED`
/// for a known type with missing or bad fields.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let malformed = |message: String| FrameError {
        code: ErrorCode::MalformedFrame,
        message,
        r#ref: None,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| malformed(format!("frame is not JSON: {err}")))?;
    let Some(object) = value.as_object() else {
        return Err(malformed("frame is not a JSON object".into()));
    };
    let r#ref = object
        .get("ref")
        .and_then(|r| r.as_str())
        .map(str::to_owned);
    let Some(frame_type) = object
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
    else {
        return Err(FrameError {
            r#ref,
            ..malformed("frame has no string `type`".into())
        });
    };
    if !CLIENT_FRAME_TYPES.contains(&frame_type.as_str()) {
        return Err(FrameError {
            code: ErrorCode::UnknownFrame,
            message: format!("unknown frame type `{frame_type}`"),
            r#ref,
        });
    }
    serde_json::from_value(value).map_err(|err| FrameError {
        code: ErrorCode::ValidationFailed,
        message: format!("bad `{frame_type}` frame: {err}"),
        r#ref,
    })
}

/// Builds an `event` frame from a stored notification's bytes without
/// re-parsing them: the stored object's fields follow `type`, `channel` and `seq`.
///
/// Returns `None` when `stored` is not a non-empty JSON object.
pub fn encode_event_frame(channel: &Channel, seq: u64, stored: &[u8]) -> Option<String> {
    let body = std::str::from_utf8(stored).ok()?.trim();
    let fields = body.strip_prefix('{')?;
    if !fields.ends_with('}') || fields.trim_start().starts_with('}') {
        return None;
    }
    let channel = serde_json::to_string(&channel.to_string()).ok()?;
    Some(format!(
        r#"{{"type":"event","channel":{channel},"seq":{seq},{fields}"#
    ))
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::envelope::parse_event;

    #[test]
    fn client_frames_parse_or_get_the_right_code() {
        let frame = parse_client_frame(
            r#"{"type":"subscribe","ref":"1","namespace":"team-42","since":50}"#,
        );
        assert!(matches!(
            frame,
            Ok(ClientFrame::Subscribe {
                since: Some(50),
                ..
            })
        ));
        assert!(matches!(
            parse_client_frame(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping { r#ref: None })
        ));

        let code = |text: &str| parse_client_frame(text).unwrap_err().code;
        assert_eq!(code("not json"), ErrorCode::MalformedFrame);
        assert_eq!(code("[1]"), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"ref":"1"}"#), ErrorCode::MalformedFrame);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownFrame);
        assert_eq!(
            code(r#"{"type":"subscribe","ref":"1"}"#),
            ErrorCode::ValidationFailed
        );
        assert_eq!(
            code(r#"{"type":"subscribe","namespace":""}"#),
            ErrorCode::ValidationFailed
        );
        let err = parse_client_frame(r#"{"type":"subscribe","ref":"7"}"#).unwrap_err();
        assert_eq!(
            err.r#ref.as_deref(),
            Some("7"),
            "the ref is echoed even for a bad frame"
        );
    }

    #[test]
    fn the_spliced_event_frame_equals_the_serialized_one() {
        let body = json!({
            "id": "e1", "type": "calendar.event.deleted", "source": "cal",
            "time": "2026-11-26T10:00:00Z", "audience": { "users": ["u\"1"] },
            "data": { "calendar_id": "c", "event_id": "e" }
        });
        let event = parse_event(body.to_string().as_bytes()).unwrap();
        let stored = serde_json::to_vec(&event.notification()).unwrap();
        let channel = event.channels[0].clone();

        let spliced = encode_event_frame(&channel, 41, &stored).unwrap();
        let serialized = ServerFrame::Event {
            channel,
            seq: 41,
            id: event.id.clone(),
            event_type: "calendar.event.deleted".into(),
            source: "cal".into(),
            time: event.time,
            data: json!({ "calendar_id": "c", "event_id": "e" }),
        }
        .to_json();
        assert_eq!(spliced, serialized);
    }

    #[test]
    fn splicing_refuses_what_is_not_a_stored_object() {
        let channel: Channel = "user:u".parse().unwrap();
        assert_eq!(encode_event_frame(&channel, 1, b"{}"), None);
        assert_eq!(encode_event_frame(&channel, 1, b"[1]"), None);
        assert_eq!(encode_event_frame(&channel, 1, b"{\"a\":1"), None);
    }

    #[test]
    fn rpc_frames_parse_and_results_carry_the_reply_beside_the_ref() {
        let frame = parse_client_frame(
            r#"{"type":"rpc","ref":"7","method":"calendar.event.rsvp","data":{"a":1}}"#,
        )
        .unwrap();
        assert!(matches!(frame, ClientFrame::Rpc { ref r#ref, .. } if r#ref == "7"));
        assert_eq!(
            parse_client_frame(r#"{"type":"rpc","method":"m"}"#)
                .unwrap_err()
                .code,
            ErrorCode::ValidationFailed,
            "a call without a ref could never be answered"
        );

        let ok = ServerFrame::RpcResult {
            r#ref: "7".into(),
            reply: RpcReply::ok(serde_json::json!({ "id": 1 })),
        };
        assert_eq!(
            ok.to_json(),
            r#"{"type":"rpc_result","ref":"7","result":{"id":1}}"#
        );
        let failed = ServerFrame::RpcResult {
            r#ref: "8".into(),
            reply: RpcReply::error("SLOT_TAKEN", "taken").unwrap(),
        };
        let text = failed.to_json();
        assert_eq!(
            text,
            r#"{"type":"rpc_result","ref":"8","error":{"code":"SLOT_TAKEN","message":"taken"}}"#
        );
        assert_eq!(serde_json::from_str::<ServerFrame>(&text).unwrap(), failed);
    }

    #[test]
    fn auth_frames_never_print_their_token() {
        let frame = parse_client_frame(r#"{"type":"auth","token":"secret.jwt.value"}"#).unwrap();
        assert!(!format!("{frame:?}").contains("secret.jwt.value"));
    }
}
