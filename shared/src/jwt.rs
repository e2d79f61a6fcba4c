//! JWT verification: HS256 shared secrets, RS256 / ES256 / EdDSA public keys
//! from a PEM file, and JWKS files whose keys are chosen by `kid`.
//!
//! Only the algorithms of configured keys are accepted; `alg: none` cannot
//! even be parsed. Expiry is exact (no leeway): an edge closes a socket at
//! `exp`, and the check at the handshake must agree with that.

use std::collections::HashSet;

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{error_code::ErrorCode, ids::Namespace};

/// The keys a service verifies tokens with.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

#[derive(Clone)]
struct VerifyingKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The claims a token must carry besides a valid signature.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// `aud` must equal this.
    pub audience: String,
    /// When set, `iss` must be present and equal this.
    pub issuer: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an RSA, EC P-256 or Ed25519 public key in PEM form")]
    UnsupportedPem,
    #[error("not a JWK set: {0}")]
    MalformedJwks(#[source] serde_json::Error),
    #[error("JWK `{kid}`: {reason}")]
    UnsupportedJwk { kid: String, reason: String },
    #[error("the JWK set holds no usable key")]
    EmptyJwks,
}

/// The claims of a user token (edge).
#[derive(Debug, Clone, Deserialize)]
pub struct UserClaims {
    pub sub: String,
    pub exp: u64,
    /// When the token was issued (Unix seconds): a revocation refuses tokens
    /// issued before its instant, and a token without `iat` counts as issued
    /// before any revocation.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Namespaces the user may join: exact names, or prefixes ending in `*`.
    #[serde(default)]
    pub ns: Vec<String>,
    /// RPC methods the user may call: exact names, or prefixes ending in `*`.
    #[serde(default)]
    pub rpc: Vec<String>,
}

/// The claims of a service token (publisher).
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceClaims {
    #[serde(default)]
    pub sub: Option<String>,
    pub exp: u64,
    /// Space-separated scopes, as in OAuth 2.0.
    #[serde(default)]
    pub scope: String,
}

/// The scope a service token needs to publish events.
pub const PUBLISH_SCOPE: &str = "events:publish";

/// The scope a service token needs to disconnect users, revoke their tokens
/// and take namespaces from their connections (the session API).
pub const SESSIONS_SCOPE: &str = "sessions:manage";

// === impl TokenError ===

impl TokenError {
    /// The wire error code of this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Expired => ErrorCode::ExpiredToken,
            Self::Invalid(_) => ErrorCode::InvalidToken,
        }
    }
}

// === impl ServiceClaims ===

impl ServiceClaims {
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope
            .split_ascii_whitespace()
            .any(|scope| scope == wanted)
    }
}

// === impl UserClaims ===

impl UserClaims {
    /// Whether the `ns` claim lets this user join `namespace`.
    pub fn allows(&self, namespace: &Namespace) -> bool {
        let name = namespace.as_str();
        self.ns.iter().any(|grant| match grant.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => grant == name,
        })
    }

    /// Refuses a token with more than `max` namespace (or rpc) grants: a socket keeps
    /// its claims for its whole life, and each `allows` walks the grants.
    ///
    /// # Errors
    /// [`TokenError::Invalid`], with the count and the bound.
    pub fn check_grants(&self, max: usize) -> Result<(), TokenError> {
        if self.ns.len() > max {
            return Err(TokenError::Invalid(format!(
                "the token carries {} namespace grants; at most {max} are allowed",
                self.ns.len()
            )));
        }
        if self.rpc.len() > max {
            return Err(TokenError::Invalid(format!(
                "the token carries {} rpc grants; at most {max} are allowed",
                self.rpc.len()
            )));
        }
        Ok(())
    }
}

// === impl KeySet ===

impl KeySet {
    /// An HS256 shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        let key = VerifyingKey {
            kid: None,
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        };
        Self { keys: vec![key] }
    }

    /// A public key in PEM form: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA).
    ///
    /// # Errors
    /// [`KeyError::UnsupportedPem`] for anything else.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let (algorithm, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (Algorithm::RS256, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (Algorithm::ES256, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (Algorithm::EdDSA, key)
        } else {
            return Err(KeyError::UnsupportedPem);
        };
        Ok(Self {
            keys: vec![VerifyingKey {
                kid: None,
                algorithm,
                key,
            }],
        })
    }

    /// Every signing key of a JWK set; each is used only for tokens whose
    /// header names its `kid` (or names none).
    ///
    /// # Errors
    /// A malformed set, a key of an unsupported type, or a set with no key.
    pub fn from_jwks(json: &[u8]) -> Result<Self, KeyError> {
        let set: JwkSet = serde_json::from_slice(json).map_err(KeyError::MalformedJwks)?;
        let keys = set
            .keys
            .iter()
            .map(jwk_key)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::EmptyJwks);
        }
        Ok(Self { keys })
    }

    /// Both sets' keys.
    pub fn merge(mut self, other: KeySet) -> Self {
        self.keys.extend(other.keys);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether a key of the set carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The signing keys of an identity provider's JWK set, skipping the keys
    /// Herald cannot verify with instead of refusing the whole set: Keycloak
    /// publishes encryption keys (`"use": "enc"`, `RSA-OAEP`) beside its
    /// signing keys, and a provider may add a key type at any time.
    ///
    /// # Errors
    /// Not a JWK set, or no usable signing key in it.
    pub fn from_provider_jwks(json: &[u8]) -> Result<Self, KeyError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<serde_json::Value>,
        }
        let set: RawSet = serde_json::from_slice(json).map_err(KeyError::MalformedJwks)?;
        let keys: Vec<_> = set
            .keys
            .into_iter()
            .filter(|raw| {
                raw.get("use")
                    .and_then(|u| u.as_str())
                    .is_none_or(|u| u == "sig")
            })
            .filter_map(|raw| serde_json::from_value::<Jwk>(raw).ok())
            .filter_map(|jwk| jwk_key(&jwk).ok())
            .collect();
        if keys.is_empty() {
            return Err(KeyError::EmptyJwks);
        }
        Ok(Self { keys })
    }

    /// The algorithms tokens may use.
    pub fn algorithms(&self) -> HashSet<Algorithm> {
        self.keys.iter().map(|k| k.algorithm).collect()
    }

    /// Verifies the signature and the registered claims, and decodes the claims.
    ///
    /// # Errors
    /// [`TokenError::Expired`] for a token past `exp` with a good signature;
    /// [`TokenError::Invalid`] for anything else wrong.
    pub fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        expect: &Expectations,
    ) -> Result<C, TokenError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| TokenError::Invalid(format!("malformed header: {err}")))?;
        let candidates = self.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && (k.kid.is_none() || header.kid.is_none() || k.kid == header.kid)
        });

        let mut validation = Validation::new(header.alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_audience(&[&expect.audience]);
        let mut required = vec!["exp", "sub", "aud"];
        if let Some(issuer) = &expect.issuer {
            validation.set_issuer(&[issuer]);
            // jsonwebtoken compares `iss` only when the token has one.
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);

        let mut last_error = TokenError::Invalid(format!("no key configured for {:?}", header.alg));
        for candidate in candidates {
            match jsonwebtoken::decode::<C>(token, &candidate.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(err) => {
                    last_error = match err.kind() {
                        ErrorKind::ExpiredSignature => return Err(TokenError::Expired),
                        ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
                        _ => return Err(TokenError::Invalid(err.to_string())),
                    }
                }
            }
        }
        Err(last_error)
    }
}

// === Development tokens ===

/// **Development only**: signs `claims` as an HS256 token with `secret`.
///
/// Herald verifies tokens and never issues them in production: user tokens
/// come from the application's identity provider, service tokens from the
/// deployment. The edge's `--dev` mode mints the demo page's tokens with this
/// (`GET /dev/token`), so the claims it builds are checked by [`KeySet::verify`]
/// like any other token.
///
/// # Errors
/// `claims` cannot be serialized as a JSON object.
pub fn mint_dev_token(
    secret: &[u8],
    claims: &impl Serialize,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.algorithm))
            .collect();
        f.debug_struct("KeySet").field("keys", &keys).finish()
    }
}

fn jwk_key(jwk: &Jwk) -> Result<VerifyingKey, KeyError> {
    let kid = jwk.common.key_id.clone();
    let unsupported = |reason: &str| KeyError::UnsupportedJwk {
        kid: kid.clone().unwrap_or_default(),
        reason: reason.to_string(),
    };
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::OctetKeyPair(okp), None | Some(KeyAlgorithm::EdDSA))
            if okp.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        _ => {
            return Err(unsupported(
                "only RS256, ES256 (P-256) and EdDSA (Ed25519) keys are supported",
            ));
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|err| unsupported(&err.to_string()))?;
    Ok(VerifyingKey {
        kid,
        algorithm,
        key,
    })
}

#[cfg(test)]
mod tests;
