//! Command-line flag groups both binaries share (each flag has an env var).

use std::{path::PathBuf, time::Duration};

use crate::{
    jwks::{JwksPolicy, JwksUrlError, Keys},
    jwt::{KeyError, KeySet},
    secret::Secret,
    telemetry::LogFormat,
};

/// Where NATS is, and how to authenticate to it.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL, or a comma-separated list of a cluster's nodes (tried
    /// in this order; the client then follows the nodes the cluster
    /// announces). `tls://` requires TLS. A user and password
    /// (`nats://user:pass@host`) or a token (`nats://token@host`) in the URLs
    /// is used to authenticate and never logged.
    // Hidden in `--help`: a URL may carry credentials.
    #[arg(
        long,
        env = "HERALD_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,
    /// A NATS `.creds` file (user JWT and nkey seed), for servers in operator mode.
    #[arg(long, env = "HERALD_NATS_CREDS", conflicts_with = "nats_nkey")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding a NATS user's nkey seed (`SU…`), for servers that
    /// authenticate users by nkey.
    #[arg(long, env = "HERALD_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// PEM CA certificate(s) that sign the NATS servers' certificates, instead
    /// of the system's roots. Any `--nats-tls-*` flag makes TLS required.
    #[arg(long, env = "HERALD_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate, for NATS servers that verify clients.
    #[arg(long, env = "HERALD_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of `--nats-tls-cert`.
    #[arg(long, env = "HERALD_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// Prefix of this service's reply subjects (JetStream answers, history
    /// reads), instead of `_INBOX`. Give each NATS user its own (`_INBOX_edge`)
    /// and let it subscribe only to `<prefix>.>`: no other user of the
    /// account can then read its replies.
    #[arg(long, env = "HERALD_NATS_INBOX_PREFIX")]
    pub nats_inbox_prefix: Option<String>,
}

impl NatsArgs {
    /// The credential and TLS files to connect with.
    pub fn auth(&self) -> crate::nats::NatsAuth {
        crate::nats::NatsAuth {
            creds: self.nats_creds.clone(),
            nkey: self.nats_nkey.clone(),
            tls_ca: self.nats_tls_ca.clone(),
            tls_cert: self.nats_tls_cert.clone(),
            tls_key: self.nats_tls_key.clone(),
            inbox_prefix: self.nats_inbox_prefix.clone(),
        }
    }
}

/// The keys tokens are verified with. At least one is required, unless `--dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct JwtArgs {
    /// HS256 shared secret.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Path to a PEM public key (RSA for RS256, EC P-256 for ES256, Ed25519 for EdDSA).
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Path to a JWKS file; keys are chosen by the token's `kid`.
    #[arg(long, env = "HERALD_JWKS")]
    pub jwks: Option<PathBuf>,
    /// The identity provider's JWKS endpoint (https); keys are chosen by the
    /// token's `kid`, refreshed per `Cache-Control: max-age` (1 min to 24 h,
    /// 10 min without one) and on an unknown `kid` (at most once per 30 s).
    /// `/readyz` is 503 until the first fetch succeeds.
    #[arg(long, env = "HERALD_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Required `iss` claim (not checked when unset).
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Development mode, never in production: with no key configured, generate an
    /// HS256 secret and print it. The edge also serves the demo page and mints
    /// tokens for anyone (`/demo`, `/dev/token`); the publisher allows CORS.
    // Boolish, so `HERALD_DEV=1` (or `yes`, `on`) works, not only `true`.
    #[arg(long, env = "HERALD_DEV", value_parser = clap::builder::BoolishValueParser::new())]
    pub dev: bool,
}

/// How logs look.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "HERALD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// Bounds on HTTP connections, so clients that connect and stall cannot hold
/// sockets and memory for ever.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// How long a client may take to send a request's headers, in
    /// milliseconds, counted from when the connection opens or its previous
    /// response ends (so an idle keep-alive connection goes too); past it the
    /// connection is closed.
    #[arg(long, env = "HERALD_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_timeout_ms: u64,
    /// How long a request may take from its headers to its response, in
    /// milliseconds (a body that trickles in); past it the answer is 408 and
    /// the connection is closed.
    #[arg(long, env = "HERALD_HTTP_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_request_timeout_ms: u64,
    /// How long a write to a client may make no progress, in milliseconds
    /// (a client that stopped reading a response, an SSE stream or a
    /// WebSocket); past it the connection is closed. A backstop under the
    /// edge's own `--write-timeout-ms`, which ends a session first and with a
    /// code: keep it longer. It also frees the socket of a session that has
    /// ended while its last bytes wait for a client that never reads.
    #[arg(long, env = "HERALD_HTTP_WRITE_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_write_timeout_ms: u64,
    /// Most accepted connections that have not yet completed a request (or a
    /// WebSocket upgrade). At the cap new connections wait in the listen
    /// backlog; once it has stayed full for a second with no slot freed
    /// (stalled clients hold it), they are closed at once.
    #[arg(long, env = "HERALD_MAX_PENDING_CONNECTIONS", default_value_t = 1024)]
    pub max_pending_connections: usize,
}

/// [`HttpArgs`], checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub write_timeout: Duration,
    /// At least 1.
    pub max_pending_connections: usize,
}

/// A configuration that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no JWT key configured: set --jwt-secret, --jwt-public-key, --jwks or --jwks-url \
         (or pass --dev to generate a development secret)"
    )]
    NoKey,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Key { path: PathBuf, source: KeyError },
    #[error("invalid {flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
    #[error("invalid --jwks-url: {0}")]
    JwksUrl(#[from] JwksUrlError),
}

/// The verification keys, and the secret generated in `--dev` mode (to print).
#[derive(Debug)]
pub struct LoadedKeys {
    pub keys: Keys,
    pub generated_secret: Option<Secret>,
}

impl JwtArgs {
    /// Loads every configured key.
    ///
    /// # Errors
    /// No key (outside dev mode), or a key file that cannot be read or parsed.
    pub fn load(&self) -> Result<LoadedKeys, ConfigError> {
        let mut keys = KeySet::default();
        if let Some(secret) = &self.jwt_secret {
            keys = keys.merge(KeySet::hs256(secret.expose().as_bytes()));
        }
        if let Some(path) = &self.jwt_public_key {
            keys = keys.merge(read_keys(path, KeySet::from_public_key_pem)?);
        }
        if let Some(path) = &self.jwks {
            keys = keys.merge(read_keys(path, KeySet::from_jwks)?);
        }
        if let Some(url) = &self.jwks_url {
            return Ok(LoadedKeys {
                keys: Keys::with_jwks_url(keys, url, JwksPolicy::default())?,
                generated_secret: None,
            });
        }
        if !keys.is_empty() {
            return Ok(LoadedKeys {
                keys: keys.into(),
                generated_secret: None,
            });
        }
        if !self.dev {
            return Err(ConfigError::NoKey);
        }
        let secret = Secret::new(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ));
        Ok(LoadedKeys {
            keys: KeySet::hs256(secret.expose().as_bytes()).into(),
            generated_secret: Some(secret),
        })
    }
}

impl HttpArgs {
    /// The limits these flags set.
    ///
    /// # Errors
    /// A zero timeout or cap, which would refuse every client.
    pub fn limits(&self) -> Result<HttpLimits, ConfigError> {
        let positive = |flag: &'static str, value: u64| {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    flag,
                    reason: "must be at least 1".into(),
                });
            }
            Ok(value)
        };
        let header_timeout = positive("--http-header-timeout-ms", self.http_header_timeout_ms)?;
        let request_timeout = positive("--http-request-timeout-ms", self.http_request_timeout_ms)?;
        let write_timeout = positive("--http-write-timeout-ms", self.http_write_timeout_ms)?;
        let max_pending = positive(
            "--max-pending-connections",
            self.max_pending_connections as u64,
        )?;
        Ok(HttpLimits {
            header_timeout: Duration::from_millis(header_timeout),
            request_timeout: Duration::from_millis(request_timeout),
            write_timeout: Duration::from_millis(write_timeout),
            max_pending_connections: max_pending as usize,
        })
    }
}

impl Default for HttpLimits {
    /// The flags' defaults.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_pending_connections: 1024,
        }
    }
}

fn read_keys(
    path: &PathBuf,
    parse: fn(&[u8]) -> Result<KeySet, KeyError>,
) -> Result<KeySet, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&bytes).map_err(|source| ConfigError::Key {
        path: path.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Args {
        #[command(flatten)]
        http: HttpArgs,
    }

    #[derive(Debug, clap::Parser)]
    struct Nats {
        #[command(flatten)]
        nats: NatsArgs,
    }

    fn nats(flags: &[&str]) -> Result<NatsArgs, clap::Error> {
        let args = std::iter::once("herald").chain(flags.iter().copied());
        Nats::try_parse_from(args).map(|n| n.nats)
    }

    #[test]
    fn nats_credentials_and_tls_flags() {
        let auth = nats(&[
            "--nats-creds",
            "/s/herald.creds",
            "--nats-tls-ca",
            "/s/ca.pem",
        ])
        .unwrap()
        .auth();
        assert_eq!(auth.creds, Some(PathBuf::from("/s/herald.creds")));
        assert!(auth.wants_tls());
        assert!(!nats(&[]).unwrap().auth().wants_tls());
        // One identity: a creds file or an nkey, not both.
        assert!(nats(&["--nats-creds", "a", "--nats-nkey", "b"]).is_err());
        // A client certificate needs its key, and the other way round.
        assert!(nats(&["--nats-tls-cert", "c"]).is_err());
        assert!(nats(&["--nats-tls-key", "k"]).is_err());
        let auth = nats(&["--nats-tls-cert", "c", "--nats-tls-key", "k"])
            .unwrap()
            .auth();
        assert_eq!(
            (auth.tls_cert, auth.tls_key),
            (Some("c".into()), Some("k".into()))
        );
    }

    fn limits(flags: &[&str]) -> Result<HttpLimits, ConfigError> {
        let args = std::iter::once("herald").chain(flags.iter().copied());
        Args::try_parse_from(args).unwrap().http.limits()
    }

    #[test]
    fn http_limits_default_to_the_documented_values_and_refuse_zero() {
        assert_eq!(limits(&[]).unwrap(), HttpLimits::default());
        assert_eq!(
            limits(&["--http-header-timeout-ms", "500"])
                .unwrap()
                .header_timeout,
            Duration::from_millis(500)
        );
        for flag in [
            "--http-header-timeout-ms",
            "--http-request-timeout-ms",
            "--max-pending-connections",
        ] {
            let err = limits(&[flag, "0"]).unwrap_err();
            assert!(err.to_string().contains(flag), "{err}");
        }
    }
}
