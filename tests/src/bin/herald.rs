//! `herald`: a small dev CLI for a local Herald — mint tokens, publish a
//! calendar event, and listen on a WebSocket.
//!
//! Run `cargo run -p herald-tests --bin herald -- --help`, or after
//! `cargo xtask up`, `target/debug/herald --help`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use herald_tests::clients::{now, post_event, sign};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Dev CLI for a local Herald.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// HS256 secret the services verify with [default: .herald/dev-secret].
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true, global = true)]
    secret: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a user token for the edge.
    Token {
        /// The user id (`sub`).
        user: String,
        /// A namespace the user may join (exact, or a prefix ending in `*`); repeatable.
        #[arg(long = "ns")]
        namespaces: Vec<String>,
        /// A namespace whose presence the user may see (exact, or a prefix ending in `*`); repeatable.
        #[arg(long = "presence")]
        presence: Vec<String>,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: i64,
        #[arg(long, default_value = "herald")]
        audience: String,
    },
    /// Print a service token for the publisher (scope `events:publish`).
    ServiceToken {
        #[arg(long, default_value_t = 3600)]
        ttl_secs: i64,
        #[arg(long, default_value = "herald-publisher")]
        audience: String,
    },
    /// Publish a sample `calendar.event.*` event and print the 202 body.
    Publish {
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        url: String,
        /// A recipient user; repeatable.
        #[arg(long = "user")]
        users: Vec<String>,
        /// A recipient namespace; repeatable.
        #[arg(long = "ns")]
        namespaces: Vec<String>,
        /// `created`, `updated` or `deleted`.
        #[arg(long, default_value = "created")]
        kind: String,
        #[arg(long, default_value = "Standup")]
        title: String,
        /// Idempotency key [default: a new UUIDv7].
        #[arg(long)]
        id: Option<String>,
    },
    /// Open a WebSocket and print every frame, one JSON per line.
    Listen {
        #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
        url: String,
        #[arg(long)]
        token: String,
        /// Namespaces to join, comma-separated.
        #[arg(long)]
        ns: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Token {
            user,
            namespaces,
            presence,
            ttl_secs,
            audience,
        } => {
            let mut claims = json!({ "sub": user, "aud": audience, "iat": now(), "exp": now() + ttl_secs, "ns": namespaces });
            if !presence.is_empty() {
                claims["presence"] = json!(presence);
            }
            println!("{}", sign(&claims, &secret(cli.secret)?));
        }
        Command::ServiceToken { ttl_secs, audience } => {
            println!(
                "{}",
                service_token(&secret(cli.secret)?, ttl_secs, &audience)
            );
        }
        Command::Publish {
            url,
            users,
            namespaces,
            kind,
            title,
            id,
        } => {
            if users.is_empty() && namespaces.is_empty() {
                bail!("name at least one recipient with --user or --ns");
            }
            let token = service_token(&secret(cli.secret)?, 300, "herald-publisher");
            let envelope = sample_event(&kind, &title, id, &users, &namespaces)?;
            let answer = post_event(&url, &token, &envelope).await;
            println!("{} {}", answer.status, answer.body);
            if answer.status != 202 {
                std::process::exit(1);
            }
        }
        Command::Listen { url, token, ns } => {
            let mut url = format!("{url}?token={token}");
            if let Some(ns) = ns {
                url.push_str(&format!("&ns={ns}"));
            }
            let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .context("connecting")?;
            while let Some(message) = socket.next().await {
                match message? {
                    Message::Text(text) => println!("{text}"),
                    Message::Close(close) => {
                        eprintln!("closed: {close:?}");
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn service_token(secret: &str, ttl_secs: i64, audience: &str) -> String {
    let claims = json!({ "sub": "herald-cli", "aud": audience, "iat": now(), "exp": now() + ttl_secs,
                         "scope": "events:publish" });
    sign(&claims, secret)
}

/// `--secret`, `$HERALD_JWT_SECRET`, or the dev secret `cargo xtask up` wrote.
fn secret(given: Option<String>) -> anyhow::Result<String> {
    if let Some(secret) = given {
        return Ok(secret);
    }
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.herald/dev-secret");
    let secret = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "no --secret, no HERALD_JWT_SECRET and no {}",
            file.display()
        )
    })?;
    Ok(secret.trim().to_string())
}

fn sample_event(
    kind: &str,
    title: &str,
    id: Option<String>,
    users: &[String],
    namespaces: &[String],
) -> anyhow::Result<serde_json::Value> {
    let hour = |h: i64| {
        let at = time::OffsetDateTime::now_utc() + time::Duration::hours(h);
        at.replace_nanosecond(0)
            .unwrap_or(at)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let data = match kind {
        "created" => json!({ "calendar_id": "cal_1", "event_id": "evt_1", "title": title,
                             "starts_at": hour(1), "ends_at": hour(2) }),
        "updated" => json!({ "calendar_id": "cal_1", "event_id": "evt_1", "title": title,
                             "starts_at": hour(2), "ends_at": hour(3), "changes": ["starts_at", "ends_at"] }),
        "deleted" => json!({ "calendar_id": "cal_1", "event_id": "evt_1" }),
        other => bail!("unknown kind `{other}`: created, updated or deleted"),
    };
    let mut envelope = json!({
        "type": format!("calendar.event.{kind}"),
        "source": "herald-cli",
        "audience": { "users": users, "namespaces": namespaces },
        "data": data,
    });
    if let Some(id) = id {
        envelope["id"] = json!(id);
    }
    Ok(envelope)
}
