//! Admission of a connection, for WebSocket and SSE alike: refusing it
//! before the upgrade (draining, full), checking its token (signature,
//! claims, the bound on namespace grants) and the namespaces it asks for.

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

use crate::{config::Config, replay::Cursor, state::AppState};

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
}

/// Why a socket is refused: one `error` frame, then the code's close code.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

/// Draining, or full: refused before the upgrade (WebSocket or SSE), so a
/// load balancer retries elsewhere.
pub(crate) fn refuse_before_upgrade(state: &AppState) -> Option<Response> {
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
    })
}

/// Verifies a user token, at the handshake and in `auth` refreshes alike:
/// its signature and claims, and how many namespace grants it carries.
pub(crate) async fn verify_user(config: &Config, token: &str) -> Result<UserClaims, TokenError> {
    let claims: UserClaims = config.keys.verify(token, &config.expect).await?;
    claims.check_grants(config.max_token_grants)?;
    Ok(claims)
}
