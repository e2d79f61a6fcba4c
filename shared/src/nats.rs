//! Connecting to NATS the same way from both services.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;
use async_nats::ServerAddr;
use percent_encoding::percent_decode_str;
use tokio::sync::Notify;

use crate::secret::redact_url;

/// How to authenticate to NATS and verify it, besides what `--nats-url`
/// carries (a user and password or a token). All paths are read at connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsAuth {
    /// A `.creds` file: a user JWT and its nkey seed (operator mode).
    pub creds: Option<PathBuf>,
    /// A file holding a user's nkey seed (`SU…`).
    pub nkey: Option<PathBuf>,
    /// PEM CA certificates that sign the servers' certificates (instead of
    /// the system's roots).
    pub tls_ca: Option<PathBuf>,
    /// A PEM client certificate, for servers that verify clients (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Reply subjects under this prefix instead of `_INBOX`, so a NATS user
    /// may be allowed to subscribe to its own replies only.
    pub inbox_prefix: Option<String>,
}

impl NatsAuth {
    /// Whether any TLS flag is set: the connection must then be TLS, whatever
    /// the server offers, so a misconfigured server cannot downgrade it.
    pub fn wants_tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some()
    }
}

/// A user and password, or a token, taken from the URLs.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    UserPassword(String, String),
    Token(String),
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The servers of a `--nats-url` list, without credentials, and the
/// credentials the URLs carried.
#[derive(Debug)]
pub struct Seeds {
    pub servers: Vec<ServerAddr>,
    pub credentials: Option<UrlCredentials>,
}

/// Parses a comma-separated list of NATS URLs (`nats://`, `tls://`, or a
/// bare `host:port`). async-nats takes one URL per string, and would print a
/// URL's password in its debug logs: the credentials are taken out here and
/// given to it as options. Every URL that carries credentials must carry the
/// same ones (a client has one identity).
///
/// # Errors
/// A malformed URL, URLs with different credentials, or none.
pub fn parse_seeds(urls: &str) -> anyhow::Result<Seeds> {
    let mut servers = Vec::new();
    let mut credentials: Option<UrlCredentials> = None;
    for raw in urls.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let redacted = redact_url(raw);
        let addr: ServerAddr = raw
            .parse()
            .with_context(|| format!("invalid NATS URL {redacted}"))?;
        let mut url = addr.into_inner();
        let user = decode(url.username(), &redacted)?;
        let password = url.password().map(|p| decode(p, &redacted)).transpose()?;
        let found = match (user.is_empty(), password) {
            (true, None) => None,
            (false, Some(password)) => Some(UrlCredentials::UserPassword(user, password)),
            (false, None) => Some(UrlCredentials::Token(user)),
            (true, Some(_)) => anyhow::bail!("NATS URL {redacted} has a password but no user"),
        };
        if let Some(found) = found {
            match &credentials {
                Some(existing) if *existing != found => anyhow::bail!(
                    "the NATS URLs carry different credentials; a client has one identity"
                ),
                _ => credentials = Some(found),
            }
            // Cannot fail: the URL has a host (async-nats parsed it).
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        servers.push(ServerAddr::from_url(url).with_context(|| format!("NATS URL {redacted}"))?);
    }
    if servers.is_empty() {
        anyhow::bail!("no NATS URL given");
    }
    Ok(Seeds {
        servers,
        credentials,
    })
}

fn decode(raw: &str, redacted: &str) -> anyhow::Result<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| anyhow::anyhow!("NATS URL {redacted}: credentials are not UTF-8"))
}

/// Connects to `urls` (one NATS URL or a comma-separated seed list of a
/// cluster's nodes) with a client name and `auth`, logging connection
/// events; every (re)connect notifies `on_connect` (messages published while
/// disconnected were lost to core NATS: the edge reconciles then).
///
/// The servers are tried in the order given, not shuffled: an operator (or a
/// test) can point each instance at a node of its choice, the others being
/// its fallbacks. The client reconnects by itself for ever after the first
/// connection, to any of them or to a node the cluster announces; a failure
/// to connect the first time is an error, so a misconfigured URL or
/// credential is reported at start-up rather than hidden behind readiness.
///
/// # Errors
/// A malformed URL list, an unreadable credential file, or no server can be
/// reached or accepts the credentials.
pub async fn connect(
    urls: &str,
    auth: &NatsAuth,
    name: &str,
    on_connect: Option<Arc<Notify>>,
) -> anyhow::Result<async_nats::Client> {
    let seeds = parse_seeds(urls)?;
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .retain_servers_order()
        .event_callback(move |event| {
            let on_connect = on_connect.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connected.");
                        if let Some(on_connect) = on_connect {
                            on_connect.notify_one();
                        }
                    }
                    async_nats::Event::Disconnected => tracing::warn!("NATS disconnected."),
                    // A permission the user lacks (the server drops the
                    // message or subscription and says so only here), or
                    // credentials refused or expired: an operator must see it.
                    async_nats::Event::ServerError(err) => {
                        tracing::warn!(error = %err, "NATS server error.");
                    }
                    async_nats::Event::ClientError(err) => {
                        tracing::warn!(error = %err, "NATS client error.");
                    }
                    async_nats::Event::LameDuckMode => {
                        tracing::info!(
                            "NATS server in lame duck mode: it will close this connection soon."
                        );
                    }
                    other => tracing::debug!(event = %other, "NATS event."),
                }
            }
        });
    if (auth.creds.is_some() || auth.nkey.is_some()) && seeds.credentials.is_some() {
        anyhow::bail!("credentials in --nats-url and --nats-creds or --nats-nkey: give one");
    }
    options = match seeds.credentials {
        Some(UrlCredentials::UserPassword(user, password)) => {
            options.user_and_password(user, password)
        }
        Some(UrlCredentials::Token(token)) => options.token(token),
        None => options,
    };
    if let Some(path) = &auth.creds {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("reading --nats-creds {}", path.display()))?;
    }
    if let Some(path) = &auth.nkey {
        let seed = std::fs::read_to_string(path)
            .with_context(|| format!("reading --nats-nkey {}", path.display()))?;
        options = options.nkey(seed.trim().to_owned());
    }
    if let Some(prefix) = &auth.inbox_prefix {
        check_inbox_prefix(prefix)?;
        options = options.custom_inbox_prefix(prefix);
    }
    if auth.wants_tls() {
        options = options.require_tls(true);
    }
    if let Some(path) = &auth.tls_ca {
        readable(path, "--nats-tls-ca")?;
        options = options.add_root_certificates(path.clone());
    }
    match (&auth.tls_cert, &auth.tls_key) {
        (Some(cert), Some(key)) => {
            readable(cert, "--nats-tls-cert")?;
            readable(key, "--nats-tls-key")?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => anyhow::bail!("--nats-tls-cert and --nats-tls-key go together"),
    }
    options
        .connect(seeds.servers)
        .await
        // The URL may hold a user and password or a token: never print those.
        .with_context(|| format!("connecting to NATS at {}", redact_url(urls)))
}

/// An inbox prefix is one or more plain subject tokens: replies go to
/// `<prefix>.<id>`, and a wildcard would make the permission match others'.
fn check_inbox_prefix(prefix: &str) -> anyhow::Result<()> {
    let valid = !prefix.is_empty()
        && prefix
            .split('.')
            .all(|token| !token.is_empty() && !token.contains(['*', '>']))
        && !prefix.chars().any(char::is_whitespace);
    if !valid {
        anyhow::bail!("invalid --nats-inbox-prefix {prefix:?}: one or more subject tokens");
    }
    Ok(())
}

fn readable(path: &std::path::Path, flag: &str) -> anyhow::Result<()> {
    std::fs::metadata(path)
        .map(drop)
        .with_context(|| format!("reading {flag} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(seeds: &Seeds) -> Vec<&str> {
        seeds.servers.iter().map(|s| s.as_url_str()).collect()
    }

    #[test]
    fn an_inbox_prefix_is_plain_subject_tokens() {
        for ok in ["_INBOX_edge", "herald.edge-1"] {
            assert!(check_inbox_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["", "_INBOX.*", ">", "a..b", ".a", "a.", "a b"] {
            assert!(check_inbox_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_seed_list_keeps_its_order() {
        let seeds = parse_seeds("nats://a:4222, tls://b:4223,c:4224,").unwrap();
        assert_eq!(
            urls(&seeds),
            ["nats://a:4222", "tls://b:4223", "nats://c:4224"]
        );
        assert!(seeds.servers[1].tls_required());
        assert_eq!(seeds.credentials, None);
        assert!(parse_seeds(" , ").is_err());
        assert!(parse_seeds("http://a:4222").is_err());
    }

    #[test]
    fn credentials_leave_the_urls_and_never_reach_an_error() {
        let seeds = parse_seeds("nats://edge:p%40ss@a:4222,nats://b:4222").unwrap();
        assert_eq!(urls(&seeds), ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(
            seeds.credentials,
            Some(UrlCredentials::UserPassword("edge".into(), "p@ss".into()))
        );
        assert!(!format!("{:?}", seeds.servers).contains("p%40ss"));
        let seeds = parse_seeds("nats://s3cret@a:4222,nats://s3cret@b:4222").unwrap();
        assert_eq!(
            seeds.credentials,
            Some(UrlCredentials::Token("s3cret".into()))
        );
        assert_eq!(urls(&seeds), ["nats://a:4222", "nats://b:4222"]);
        let err = parse_seeds("nats://u:alpha1@a:4222,nats://u:beta2@b:4222").unwrap_err();
        assert!(!format!("{err:#}").contains("alpha1"), "{err:#}");
        let err = parse_seeds("nats://u:s3cret@a:4222,nats://u:s3cret@[::1").unwrap_err();
        assert!(!format!("{err:#}").contains("s3cret"), "{err:#}");
    }
}
