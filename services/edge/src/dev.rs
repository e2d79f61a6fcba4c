//! Dev-mode routes for the demo page: `GET /dev/token` mints tokens for
//! anyone who asks, `GET /dev/config` says where the publisher is. They exist
//! only with `--dev`, and `/dev/token` only when an HS256 secret is at hand.

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use herald_shared::{
    error_code::{ErrorBody, ErrorCode},
    ids::{Namespace, UserId},
    jwt::{PUBLISH_SCOPE, mint_dev_token},
    secret::Secret,
};
use serde_json::json;

use crate::state::AppState;

/// How long minted tokens live; the page asks again before they expire.
const TOKEN_TTL_SECS: i64 = 3600;
/// The publisher's default `--jwt-audience`.
const PUBLISHER_AUDIENCE: &str = "herald-publisher";
/// `sub` of the service token the page publishes with.
const DEMO_SERVICE: &str = "herald-demo";

/// The dev routes for this configuration.
pub(crate) fn routes(secret: Option<&Secret>) -> Router<AppState> {
    let router = Router::new().route("/dev/config", get(config));
    if secret.is_some() {
        router.route("/dev/token", get(token))
    } else {
        tracing::warn!(
            "Development mode without an HS256 secret (--jwt-secret): GET /dev/token is off."
        );
        router
    }
}

/// `{"publisher_url": "..."}`
async fn config(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "publisher_url": state.config.dev_publisher_url }))
}

/// `GET /dev/token?user=<id>&ns=<grant>&rpc=<grant>`: a user token for this
/// edge and a service token for the publisher, both signed with the dev
/// secret. `ns` (namespaces) and `rpc` (methods) may repeat or hold a
/// comma-separated list; grants are names or prefixes ending in `*`.
async fn token(
    State(state): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let Some(secret) = &state.config.dev_secret else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (user, grants, rpc) = match parse_query(&query) {
        Ok(parsed) => parsed,
        Err(message) => {
            let body = ErrorBody::new(ErrorCode::ValidationFailed, message);
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let exp = now + TOKEN_TTL_SECS;
    let mut user_claims = json!({
        "sub": user.as_str(), "aud": state.config.expect.audience,
        "iat": now, "exp": exp, "ns": grants, "rpc": rpc,
    });
    let mut service_claims = json!({
        "sub": DEMO_SERVICE, "aud": PUBLISHER_AUDIENCE,
        "iat": now, "exp": exp, "scope": PUBLISH_SCOPE,
    });
    // The publisher is assumed to check the same issuer, if any.
    if let Some(issuer) = &state.config.expect.issuer {
        user_claims["iss"] = json!(issuer);
        service_claims["iss"] = json!(issuer);
    }
    let key = secret.expose().as_bytes();
    let minted = mint_dev_token(key, &user_claims)
        .and_then(|token| Ok((token, mint_dev_token(key, &service_claims)?)));
    match minted {
        Ok((token, service_token)) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({ "token": token, "service_token": service_token, "exp": exp })),
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "Minting a dev token failed.");
            let body = ErrorBody::new(ErrorCode::InternalError, "cannot mint a token");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
    }
}

/// The user id, the namespace grants and the method grants, checked.
fn parse_query(query: &[(String, String)]) -> Result<(UserId, Vec<String>, Vec<String>), String> {
    let mut user = None;
    let mut grants = Vec::new();
    let mut rpc = Vec::new();
    let list = |value: &str| {
        value
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for (key, value) in query {
        match key.as_str() {
            "user" => user = Some(value),
            "ns" => grants.extend(list(value)),
            "rpc" => rpc.extend(list(value)),
            _ => {}
        }
    }
    if let Some(bad) = rpc
        .iter()
        .find(|g| g.len() > 128 || g.chars().any(char::is_control))
    {
        return Err(format!(
            "rpc `{bad}`: at most 128 bytes, no control characters"
        ));
    }
    let user = user.ok_or("name the user: `?user=<id>`")?;
    let user = UserId::parse(user.as_str()).map_err(|err| format!("user: {err}"))?;
    for grant in &grants {
        // `*` alone grants every namespace; `team-*` every name with that prefix.
        let name = grant.strip_suffix('*').unwrap_or(grant);
        if !name.is_empty() {
            Namespace::parse(name).map_err(|err| format!("ns `{grant}`: {err}"))?;
        }
    }
    Ok((user, grants, rpc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn namespace_grants_repeat_or_come_comma_separated() {
        let (user, grants, rpc) = parse_query(&pairs(&[
            ("user", "u1"),
            ("ns", "team-*, lobby"),
            ("ns", "x"),
            ("rpc", "calendar.*, other.method"),
        ]))
        .unwrap();
        assert_eq!(user.as_str(), "u1");
        assert_eq!(grants, ["team-*", "lobby", "x"]);
        assert_eq!(rpc, ["calendar.*", "other.method"]);
    }

    #[test]
    fn a_user_is_required_and_checked() {
        assert!(parse_query(&pairs(&[("ns", "team-*")])).is_err());
        assert!(parse_query(&pairs(&[("user", "")])).is_err());
        assert!(parse_query(&pairs(&[("user", "u1"), ("ns", "bad\u{7}*")])).is_err());
    }
}
