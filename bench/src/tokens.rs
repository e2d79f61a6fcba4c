//! The HS256 secret the services are started with, and the tokens signed with it: user tokens
//! for the edges (audience `herald`) and a service token for the publisher (audience
//! `herald-publisher`, scope `events:publish`), shaped as the test harness's.

use std::{fmt, fs::File, io::Read, time::SystemTime};

use anyhow::Context as _;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

/// How long every token lives: longer than any scenario.
const TOKEN_TTL_SECS: u64 = 6 * 3600;

/// A random HS256 secret and its signing key.
pub(crate) struct Keys {
    secret: String,
    encoding: EncodingKey,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

impl Keys {
    /// 32 bytes from `/dev/urandom`, as hex.
    pub(crate) fn random() -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut bytes))
            .context("reading /dev/urandom")?;
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let encoding = EncodingKey::from_secret(secret.as_bytes());
        Ok(Self { secret, encoding })
    }

    /// The secret, for `HERALD_JWT_SECRET`.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// A user token: `sub`, audience `herald`, the namespaces it may join.
    pub(crate) fn user_token(&self, sub: &str, ns: &[&str]) -> anyhow::Result<String> {
        self.user_token_with_rpc(sub, ns, &[])
    }

    /// A user token that may also call the `rpc` methods granted (exact names, or prefixes
    /// ending in `*`, such as `calendar.*`).
    pub(crate) fn user_token_with_rpc(
        &self,
        sub: &str,
        ns: &[&str],
        rpc: &[&str],
    ) -> anyhow::Result<String> {
        let now = unix_now();
        self.sign(&json!({
            "sub": sub, "aud": "herald", "iat": now, "exp": now + TOKEN_TTL_SECS, "ns": ns,
            "rpc": rpc,
        }))
    }

    /// A publisher token with the `events:publish` scope.
    pub(crate) fn service_token(&self) -> anyhow::Result<String> {
        self.service_token_for("herald-bench")
    }

    /// A publisher token with the `events:publish` scope for the service `sub` (the publisher's
    /// quota is per `sub`).
    pub(crate) fn service_token_for(&self, sub: &str) -> anyhow::Result<String> {
        let now = unix_now();
        self.sign(&json!({
            "sub": sub, "aud": "herald-publisher", "iat": now,
            "exp": now + TOKEN_TTL_SECS, "scope": "events:publish",
        }))
    }

    fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        jsonwebtoken::encode(&Header::default(), claims, &self.encoding).context("signing a token")
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
