//! Client messages (RPC): the registry of methods a browser may call over its
//! socket, their validated request types, the reply every domain service
//! answers with, and the NATS headers the edge sets.
//!
//! Adding a method is one line in the `wire_registry!` invocation below plus its
//! request struct; validation, schemas, the `rpc.<method>` subject and the
//! `herald.d.ts` types follow. The edge validates a call before any service
//! sees it, so a service may trust the body's shape; it re-parses it with the
//! same type ([`RpcMethod::parse_body`]) because it should not trust its
//! network either.

pub mod calendar;
mod reply;

use serde::de::DeserializeOwned;

pub use reply::{RpcCode, RpcError, RpcReply};

use crate::{
    error_code::FieldError,
    jwt::UserClaims,
    registry::{validate_data, wire_registry},
};

/// NATS header names of an `rpc.<method>` request. Only edges may publish on
/// `rpc.>` (NATS permissions), so a service trusts them.
pub mod headers {
    /// The caller: the token's `sub`, never anything the client sent.
    pub const USER: &str = "Herald-User";
    /// The calling connection's session id (the `welcome` frame's `session_id`).
    pub const SESSION: &str = "Herald-Session";
    /// The edge node that relayed the call.
    pub const NODE: &str = "Herald-Node";
}

/// A request type's rules that garde cannot say field by field (at least one
/// of several optional fields, say). Checked after the garde rules pass.
pub trait CrossRules {
    /// Every broken rule, each with its path under `data`.
    fn cross_rules(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

wire_registry! {
    /// A registered RPC method.
    kind RpcMethod;
    /// The validated `data` of a call, one variant per registered method;
    /// serializes to the request body a service receives.
    data RpcRequest;
    parse parse_request;

    /// Create an event in a calendar the caller belongs to.
    CalendarEventCreate => "calendar.event.create", calendar::CreateEvent;
    /// Change some fields of an event (at least one).
    CalendarEventUpdate => "calendar.event.update", calendar::UpdateEvent;
    /// Delete an event.
    CalendarEventDelete => "calendar.event.delete", calendar::DeleteEvent;
    /// Answer an invitation as the caller.
    CalendarEventRsvp => "calendar.event.rsvp", calendar::RsvpEvent;
    /// The events of a calendar between `from` and `to` (at most 92 days):
    /// the state a client loads first, and again after `history_truncated`.
    CalendarEventList => "calendar.event.list", calendar::ListEvents;
}

impl RpcMethod {
    /// Parses a request body (what a service receives on `rpc.<method>`) and
    /// validates it as the edge did.
    ///
    /// # Errors
    /// Every broken rule, each with its path under `data`.
    pub fn parse_body(self, body: &[u8]) -> Result<RpcRequest, Vec<FieldError>> {
        let data: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
            vec![FieldError {
                path: "data".into(),
                message: format!("not JSON: {err}"),
            }]
        })?;
        self.parse_data(data)
    }
}

impl RpcRequest {
    /// The request body sent to the service: the validated `data` as JSON.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("request types always serialize")
    }
}

// === impl UserClaims ===

impl UserClaims {
    /// Whether the `rpc` claim lets this user call `method` (exact names, or
    /// prefixes ending in `*`, as `ns`).
    pub fn allows_method(&self, method: RpcMethod) -> bool {
        let name = method.as_str();
        self.rpc.iter().any(|grant| match grant.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => grant == name,
        })
    }
}

/// Deserializes `data` (unknown fields refused), then runs the garde rules and
/// the cross-field rules.
fn parse_request<T>(data: serde_json::Value) -> Result<T, Vec<FieldError>>
where
    T: DeserializeOwned + garde::Validate<Context = ()> + CrossRules,
{
    let parsed: T = validate_data(data)?;
    let broken = parsed.cross_rules();
    if broken.is_empty() {
        Ok(parsed)
    } else {
        Err(broken)
    }
}

#[cfg(test)]
mod tests;
