//! Command-line flag groups both binaries share (each flag has an env var).

use std::path::PathBuf;

use crate::{
    jwt::{KeyError, KeySet},
    secret::Secret,
    telemetry::LogFormat,
};

/// Where NATS is.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL.
    // Hidden in `--help`: a URL may carry credentials (`nats://user:pass@host`).
    #[arg(
        long,
        env = "HERALD_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        hide_env_values = true
    )]
    pub nats_url: String,
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

/// A configuration that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no JWT key configured: set --jwt-secret, --jwt-public-key or --jwks \
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
}

/// The verification keys, and the secret generated in `--dev` mode (to print).
#[derive(Debug)]
pub struct LoadedKeys {
    pub keys: KeySet,
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
        if !keys.is_empty() {
            return Ok(LoadedKeys {
                keys,
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
            keys: KeySet::hs256(secret.expose().as_bytes()),
            generated_secret: Some(secret),
        })
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
