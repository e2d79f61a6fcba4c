//! A cache of verified tokens, keyed by the token's exact bytes, so that a
//! service sending the same bearer token with every request pays for its
//! signature and claims once rather than per request.
//!
//! A cached answer is exactly what verifying again would give, because each
//! entry holds:
//! - the token's `exp`: an entry is used only strictly before it (verification
//!   itself has no leeway), so an expired token is verified again and refused
//!   as `EXPIRED_TOKEN`; `nbf` was met when it was verified and stays met;
//! - the key set it was verified under ([`Keys::snapshot`], an `Arc` swapped
//!   on every fetch of `--jwks-url`): an entry is used only while that same
//!   set is in use. A key the provider removes stops being accepted at the
//!   fetch that drops it, as without the cache. Fixed keys (`--jwt-secret`,
//!   `--jwt-public-key`, `--jwks`) never change, so there entries live until
//!   `exp`; with `--jwks-url` every refresh starts the cache over, at most
//!   one verification per token per refresh. The entry keeps its key set
//!   alive, so a later set can never be mistaken for it.
//!
//! Only successes are cached: a refused token is verified every time. The
//! audience and issuer expected are the cache owner's, fixed for its life.
//! The cache holds at most [`MAX_ENTRIES`] tokens of at most
//! [`MAX_TOKEN_BYTES`] (a longer one is verified every time): a full cache
//! first drops expired and stale entries, then an arbitrary one, so a caller
//! with many valid tokens can only cause misses.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::de::DeserializeOwned;

use crate::{
    jwks::Keys,
    jwt::{Expectations, KeySet, ServiceClaims, TokenError, UserClaims},
};

/// The most tokens held.
pub const MAX_ENTRIES: usize = 1024;
/// The longest token cached, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Claims that say when their token expires.
pub trait Expiring {
    /// `exp`, Unix seconds.
    fn exp(&self) -> u64;
}

impl Expiring for ServiceClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
}

impl Expiring for UserClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
}

/// Verified tokens and their claims `C`; see the module doc.
pub struct TokenCache<C> {
    entries: Mutex<HashMap<Box<str>, Entry<C>>>,
}

struct Entry<C> {
    claims: C,
    /// The key set the token was verified under.
    keys: Arc<KeySet>,
}

impl<C> Default for TokenCache<C> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<C> std::fmt::Debug for TokenCache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("n_entries", &self.len())
            .finish()
    }
}

impl<C: DeserializeOwned + Expiring + Clone> TokenCache<C> {
    /// [`Keys::verify`], answered from the cache when `token` was verified
    /// before under the key set in use now and has not expired.
    ///
    /// # Errors
    /// As [`Keys::verify`].
    pub async fn verify(
        &self,
        keys: &Keys,
        token: &str,
        expect: &Expectations,
    ) -> Result<C, TokenError> {
        // Taken before verifying: were the keys to change meanwhile, the
        // entry names the older set and is never used (see the module doc).
        let snapshot = keys.snapshot();
        if let Some(claims) = self.lookup(token, &snapshot, unix_now()) {
            return Ok(claims);
        }
        let claims: C = keys.verify(token, expect).await?;
        self.insert(token, &claims, snapshot, unix_now());
        Ok(claims)
    }

    /// The cached claims of `token` if it was verified under `keys` and
    /// `now` is before its `exp`; a stale entry is dropped.
    fn lookup(&self, token: &str, keys: &Arc<KeySet>, now: u64) -> Option<C> {
        let mut entries = self.lock();
        let entry = entries.get(token)?;
        if Arc::ptr_eq(&entry.keys, keys) && now < entry.claims.exp() {
            return Some(entry.claims.clone());
        }
        entries.remove(token);
        None
    }

    fn insert(&self, token: &str, claims: &C, keys: Arc<KeySet>, now: u64) {
        if token.len() > MAX_TOKEN_BYTES || now >= claims.exp() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(token) {
            entries.retain(|_, entry| Arc::ptr_eq(&entry.keys, &keys) && now < entry.claims.exp());
            if entries.len() >= MAX_ENTRIES
                && let Some(victim) = entries.keys().next().cloned()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(
            token.into(),
            Entry {
                claims: claims.clone(),
                keys,
            },
        );
    }
}

impl<C> TokenCache<C> {
    /// Tokens held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Entry<C>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jwt::mint_dev_token;

    const SECRET: &str = "cache-test-secret";

    fn expect() -> Expectations {
        Expectations {
            audience: "herald-publisher".into(),
            issuer: None,
        }
    }

    fn token(sub: &str, exp: u64) -> String {
        mint_dev_token(
            SECRET.as_bytes(),
            &json!({"sub": sub, "aud": "herald-publisher", "exp": exp, "scope": "events:publish"}),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_verified_token_is_answered_from_the_cache_under_the_same_keys_until_exp() {
        let keys = Keys::from(KeySet::hs256(SECRET.as_bytes()));
        let cache = TokenCache::<ServiceClaims>::default();
        let exp = unix_now() + 600;
        let token = token("svc", exp);

        let claims = cache.verify(&keys, &token, &expect()).await.unwrap();
        assert_eq!(claims.sub.as_deref(), Some("svc"));
        assert_eq!(cache.len(), 1);
        let snapshot = keys.snapshot();
        assert!(cache.lookup(&token, &snapshot, exp - 1).is_some());
        // At `exp` it is verified again (and refused by then).
        assert!(cache.lookup(&token, &snapshot, exp).is_none());
        assert!(cache.is_empty(), "the expired entry is dropped");
    }

    #[tokio::test]
    async fn another_key_set_makes_every_entry_stale() {
        let keys = Keys::from(KeySet::hs256(SECRET.as_bytes()));
        let cache = TokenCache::<ServiceClaims>::default();
        let token = token("svc", unix_now() + 600);
        cache.verify(&keys, &token, &expect()).await.unwrap();

        // The same keys in a new set, as a JWKS refresh swaps in.
        let refreshed = Arc::new(KeySet::hs256(SECRET.as_bytes()));
        assert!(cache.lookup(&token, &refreshed, unix_now()).is_none());
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn refusals_expired_tokens_and_long_tokens_are_not_cached() {
        let keys = Keys::from(KeySet::hs256(SECRET.as_bytes()));
        let cache = TokenCache::<ServiceClaims>::default();
        let forged = mint_dev_token(
            b"another-secret",
            &json!({"sub": "svc", "aud": "herald-publisher", "exp": unix_now() + 600}),
        )
        .unwrap();
        assert!(cache.verify(&keys, &forged, &expect()).await.is_err());
        assert_eq!(
            cache
                .verify(&keys, &token("svc", unix_now() - 1), &expect())
                .await
                .err(),
            Some(TokenError::Expired)
        );
        let long = token(&"s".repeat(MAX_TOKEN_BYTES), unix_now() + 600);
        assert!(cache.verify(&keys, &long, &expect()).await.is_ok());
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn a_full_cache_stays_bounded_and_prefers_dropping_stale_entries() {
        let keys = Keys::from(KeySet::hs256(SECRET.as_bytes()));
        let snapshot = keys.snapshot();
        let cache = TokenCache::<ServiceClaims>::default();
        let now = unix_now();
        let claims = |exp| ServiceClaims {
            sub: Some("svc".into()),
            exp,
            scope: String::new(),
        };
        for i in 0..MAX_ENTRIES {
            // Half of them expire at `now + 10`.
            let exp = if i % 2 == 0 { now + 10 } else { now + 600 };
            cache.insert(&format!("t{i}"), &claims(exp), snapshot.clone(), now);
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        cache.insert("late", &claims(now + 600), snapshot.clone(), now + 10);
        assert_eq!(cache.len(), MAX_ENTRIES / 2 + 1, "the expired half went");
        for i in 0..MAX_ENTRIES {
            cache.insert(
                &format!("u{i}"),
                &claims(now + 600),
                snapshot.clone(),
                now + 10,
            );
        }
        assert_eq!(cache.len(), MAX_ENTRIES, "never over the bound");
    }
}
