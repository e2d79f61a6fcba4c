//! Admission of a connection, for WebSocket and SSE alike: refusing it
//! before the upgrade (draining, full, an origin not allowed), checking its
//! token (signature, claims, the bound on namespace grants), the user's
//! connection cap and the namespaces it asks for.

use std::collections::HashMap;

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use herald_shared::{
    error_code::ErrorCode,
    frames::ServerFrame,
    ids::{Namespace, UserId},
    jwt::{TokenError, UserClaims},
};

use crate::{config::Config, replay::Cursor, state::AppState, user_slots::UserSlot};

/// A socket that passed authentication.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) user: UserId,
    pub(crate) claims: UserClaims,
    /// Allowed namespaces from the `ns` query.
    pub(crate) namespaces: Vec<Namespace>,
    /// `since`/`epoch` from the query: resume every channel named at connect.
    pub(crate) resume: Option<Cursor>,
    /// Error frames for what was refused, sent after `welcome`.
    pub(crate) notices: Vec<ServerFrame>,
    /// With `--max-connections-per-user`: one of the user's connections,
    /// released when the session drops it.
    pub(crate) slot: Option<UserSlot>,
}

/// Why a socket is refused: one `error` frame, then the code's close code.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

/// Draining, or full: refused before the upgrade (WebSocket or SSE), so a
/// load balancer retries elsewhere; an `Origin` that `--allowed-origins`
/// does not list: 403, so a page of another site cannot use a browser's
/// cookies or network position to open a connection.
pub(crate) fn refuse_before_upgrade(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    if let Some(allowed) = &state.config.allowed_origins
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        // A request without `Origin` is no cross-site browser request:
        // browsers send it on every WebSocket and cross-origin request (not on
        // a same-origin EventSource), and other clients can forge it anyway.
        let origin = origin.to_str().unwrap_or_default();
        if !allowed.iter().any(|pattern| pattern.matches(origin)) {
            return Some((StatusCode::FORBIDDEN, "origin not allowed").into_response());
        }
    }
    let full = state
        .config
        .max_connections
        .is_some_and(|max| state.sessions.len() >= max);
    (state.draining.is_cancelled() || full).then(|| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
        )
            .into_response()
    })
}

/// Checks the token and the requested namespaces (for WebSocket and SSE
/// alike); a refusal is counted in the metrics by its code.
pub(crate) async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Admitted, Refusal> {
    let admission = check(state, headers, query).await;
    if let Err(refusal) = &admission {
        state.metrics.auth_failed(refusal.code);
    }
    admission
}

async fn check(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Admitted, Refusal> {
    let refusal = |code, message: String| Refusal { code, message };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let token = bearer
        .or(query.get("token").map(String::as_str))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(refusal(
            ErrorCode::MissingToken,
            "send a token in the `token` query or an Authorization header".into(),
        ));
    };
    let claims = verify_user(&state.config, token)
        .await
        .map_err(|err| refusal(err.code(), err.to_string()))?;
    let user = UserId::parse(claims.sub.as_str()).map_err(|err| {
        refusal(
            ErrorCode::InvalidToken,
            format!("invalid token: `sub` {err}"),
        )
    })?;

    refuse_revoked(state, &user, &claims)?;

    let mut notices = Vec::new();
    let mut namespaces: Vec<Namespace> = Vec::new();
    let requested: Vec<&str> = query
        .get("ns")
        .map(|ns| {
            ns.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for name in &requested {
        let error = |code, message: String| ServerFrame::Error {
            code,
            message,
            r#ref: None,
        };
        match Namespace::parse(*name) {
            Err(err) => notices.push(error(
                ErrorCode::ValidationFailed,
                format!("namespace `{name}` {err}"),
            )),
            Ok(ns) if !claims.allows(&ns) => notices.push(error(
                ErrorCode::ForbiddenNamespace,
                format!("the token does not allow `{ns}`"),
            )),
            Ok(ns) if namespaces.contains(&ns) => {}
            Ok(_) if namespaces.len() >= state.config.max_namespaces_per_socket => {
                notices.push(error(
                    ErrorCode::TooManySubscriptions,
                    format!(
                        "at most {} namespaces per socket",
                        state.config.max_namespaces_per_socket
                    ),
                ))
            }
            Ok(ns) => namespaces.push(ns),
        }
    }
    if !requested.is_empty() && namespaces.is_empty() {
        return Err(refusal(
            ErrorCode::ForbiddenNamespace,
            "none of the requested namespaces is allowed".into(),
        ));
    }
    // Last, so that a connection refused for anything else takes no slot.
    let slot = match state.config.max_connections_per_user {
        None => None,
        Some(max) => Some(state.user_connections.acquire(&user, max).ok_or_else(|| {
            refusal(
                ErrorCode::TooManyConnections,
                format!("at most {max} connections per user on this node"),
            )
        })?),
    };
    let resume = match query.get("since").map(|since| since.parse::<u64>()) {
        None => None,
        Some(Ok(since)) => Some(Cursor {
            since,
            epoch: query.get("epoch").cloned(),
        }),
        Some(Err(_)) => {
            notices.push(ServerFrame::Error {
                code: ErrorCode::ValidationFailed,
                message: "`since` must be a seq (an unsigned integer); delivery starts live".into(),
                r#ref: None,
            });
            None
        }
    };
    Ok(Admitted {
        user,
        claims,
        namespaces,
        resume,
        notices,
        slot,
    })
}

/// A token issued before a revocation of its user (or without `iat`, while
/// one holds) is `REVOKED`.
fn refuse_revoked(state: &AppState, user: &UserId, claims: &UserClaims) -> Result<(), Refusal> {
    if state.registry.is_revoked(user, claims.iat) {
        return Err(Refusal {
            code: ErrorCode::Revoked,
            message: "the token was revoked; sign in again".into(),
        });
    }
    Ok(())
}

/// Verifies a user token, at the handshake and in `auth` refreshes alike:
/// its signature and claims, and how many namespace grants it carries.
pub(crate) async fn verify_user(config: &Config, token: &str) -> Result<UserClaims, TokenError> {
    let claims: UserClaims = config.keys.verify(token, &config.expect).await?;
    claims.check_grants(config.max_token_grants)?;
    Ok(claims)
}
