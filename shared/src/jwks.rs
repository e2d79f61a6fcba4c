//! The keys a service verifies tokens with, swappable while it runs: the
//! fixed keys of its flags, plus the keys of an identity provider's JWKS
//! endpoint (`--jwks-url`), which the provider rotates.
//!
//! The endpoint is fetched at start, again when its `Cache-Control: max-age`
//! runs out (clamped, so a provider cannot make us poll it every second nor
//! keep a removed key for a week), and when a token names a `kid` we do not
//! know, at most once per [`JwksPolicy::unknown_kid_interval`]: a flood of
//! made-up kids then costs the provider one request, not one per token.
//! A failed fetch keeps the last good keys.
//!
//! Verification reads the current set through a read lock held only long
//! enough to clone an `Arc`: the handshake never waits for a fetch, except a
//! token with an unknown `kid`, which waits for the one fetch it may trigger.

use std::{
    fmt,
    sync::{
        Arc, OnceLock, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::de::DeserializeOwned;

use crate::jwt::{Expectations, KeySet, TokenError};

/// How a JWKS endpoint is polled. The defaults are the documented ones;
/// tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksPolicy {
    /// Refresh interval when the answer has no `max-age`.
    pub default_ttl: Duration,
    /// A shorter `max-age` is raised to this.
    pub min_ttl: Duration,
    /// A longer `max-age` is lowered to this.
    pub max_ttl: Duration,
    /// Least time between two fetches caused by unknown `kid`s.
    pub unknown_kid_interval: Duration,
    /// First wait before retrying a failed fetch; it doubles up to `min_ttl`.
    pub retry: Duration,
    /// Bound on one fetch (connect, answer and body).
    pub timeout: Duration,
}

/// Most bytes of a JWKS answer: real sets are a few KiB.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// What a fetch of the endpoint came to: the `result` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FetchResult {
    Ok,
    /// Unreachable, timed out, or an HTTP error status.
    Unavailable,
    /// An answer that is not a JWK set with a usable signing key.
    Invalid,
}

impl FetchResult {
    pub const ALL: [Self; 3] = [Self::Ok, Self::Unavailable, Self::Invalid];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Unavailable => "unavailable",
            Self::Invalid => "invalid",
        }
    }
}

/// Where a service counts fetches and loaded keys (its metrics).
pub trait JwksObserver: Send + Sync {
    fn fetched(&self, result: FetchResult);
    /// Keys now in use from the endpoint.
    fn keys_loaded(&self, n_keys: usize);
}

/// The verification keys, cheap to clone; clones share the same keys.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

struct Inner {
    /// The keys of `--jwt-secret`, `--jwt-public-key` and `--jwks`.
    fixed: KeySet,
    /// `fixed` plus the endpoint's last good keys.
    current: RwLock<Arc<KeySet>>,
    remote: Option<Remote>,
    /// Counts good fetches, for whoever waits for new keys.
    fetched: tokio::sync::watch::Sender<u64>,
}

struct Remote {
    url: reqwest::Url,
    policy: JwksPolicy,
    client: reqwest::Client,
    /// A fetch has succeeded: `/readyz` may answer 200.
    ready: AtomicBool,
    /// When an unknown `kid` last caused a fetch; held across that fetch,
    /// so concurrent unknown kids wait for it rather than fetch again.
    unknown_kid_gate: tokio::sync::Mutex<Option<Instant>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    observer: OnceLock<Arc<dyn JwksObserver>>,
}

/// A `--jwks-url` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksUrlError {
    #[error("not a URL: {0}")]
    Malformed(String),
    #[error(
        "keys must come over https (plain http only to localhost): anyone on the path could inject keys"
    )]
    NotHttps,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The refresh task of [`Keys::start`]; dropping it stops the refreshes.
#[derive(Debug)]
#[must_use = "the keys are refreshed until this is dropped"]
pub struct Refreshing(Option<tokio::task::JoinHandle<()>>);

impl Drop for Refreshing {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Installs rustls's `ring` provider as the process default, once.
///
/// reqwest is built with `rustls-no-provider` (ring is already in the tree
/// through async-nats; aws-lc-rs would add a C build), and features are
/// unified across the workspace: *every* reqwest client in the process (the
/// OTLP exporter's, the tests') then panics when built before a provider is
/// installed. [`crate::telemetry::init`] and `init_for_tests` call this
/// first thing; so does anything else that builds a client.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider is installed already: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

// === impl JwksPolicy ===

impl Default for JwksPolicy {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(10 * 60),
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 60 * 60),
            unknown_kid_interval: Duration::from_secs(30),
            retry: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

impl JwksPolicy {
    /// How long keys fetched with this `Cache-Control` stay fresh.
    pub fn ttl(&self, cache_control: Option<&str>) -> Duration {
        let max_age = cache_control.and_then(|value| {
            value.split(',').find_map(|directive| {
                let (name, seconds) = directive.trim().split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("max-age")
                    .then(|| seconds.trim().trim_matches('"').parse::<u64>().ok())
                    .flatten()
            })
        });
        match max_age {
            Some(seconds) => Duration::from_secs(seconds).clamp(self.min_ttl, self.max_ttl),
            None => self.default_ttl,
        }
    }
}

// === impl Keys ===

impl From<KeySet> for Keys {
    /// Fixed keys only.
    fn from(fixed: KeySet) -> Self {
        Self::new(fixed, None)
    }
}

impl Keys {
    fn new(fixed: KeySet, remote: Option<Remote>) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: RwLock::new(Arc::new(fixed.clone())),
                fixed,
                remote,
                fetched: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// `fixed` plus the keys of the JWKS endpoint at `url`, once
    /// [`Keys::start`] has fetched them.
    ///
    /// # Errors
    /// A malformed URL, plain http to anything but localhost, or no TLS.
    pub fn with_jwks_url(
        fixed: KeySet,
        url: &str,
        policy: JwksPolicy,
    ) -> Result<Self, JwksUrlError> {
        let url =
            reqwest::Url::parse(url).map_err(|err| JwksUrlError::Malformed(err.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => return Err(JwksUrlError::NotHttps),
            other => return Err(JwksUrlError::Malformed(format!("scheme `{other}`"))),
        }
        // A redirect may not downgrade to plain http (but to localhost).
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if attempt.url().scheme() != "https" && !is_loopback(attempt.url()) {
                attempt.error("a redirect away from https")
            } else {
                attempt.follow()
            }
        });
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            .redirect(redirects)
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| JwksUrlError::Client(err.to_string()))?;
        let remote = Remote {
            url,
            policy,
            client,
            ready: AtomicBool::new(false),
            unknown_kid_gate: tokio::sync::Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            observer: OnceLock::new(),
        };
        Ok(Self::new(fixed, Some(remote)))
    }

    /// Starts refreshing the endpoint's keys, if there is one, reporting to
    /// `observer`; they are refreshed until the returned value is dropped.
    pub fn start(&self, observer: Arc<dyn JwksObserver>) -> Refreshing {
        let Some(remote) = &self.inner.remote else {
            return Refreshing(None);
        };
        let _ = remote.observer.set(observer);
        let keys = self.clone();
        Refreshing(Some(tokio::spawn(
            async move { keys.refresh_forever().await },
        )))
    }

    /// The endpoint's keys have been fetched (always true without one).
    pub fn ready(&self) -> bool {
        self.inner
            .remote
            .as_ref()
            .is_none_or(|remote| remote.ready.load(Ordering::Acquire))
    }

    /// Changes after each good fetch of the endpoint (its value counts them).
    pub fn fetches(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.fetched.subscribe()
    }

    /// The keys in use now.
    pub fn snapshot(&self) -> Arc<KeySet> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// [`KeySet::verify`] with the current keys; a token that names a `kid`
    /// none of them has may first cause one fetch of the endpoint (see the
    /// module doc).
    ///
    /// # Errors
    /// As [`KeySet::verify`].
    pub async fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
        expect: &Expectations,
    ) -> Result<C, TokenError> {
        let keys = self.snapshot();
        let verified = keys.verify(token, expect);
        let Some(remote) = &self.inner.remote else {
            return verified;
        };
        if verified.is_ok() {
            return verified;
        }
        let unknown_kid = jsonwebtoken::decode_header(token)
            .ok()
            .and_then(|header| header.kid)
            .is_some_and(|kid| !keys.has_kid(&kid));
        if !unknown_kid {
            return verified;
        }
        {
            let mut last = remote.unknown_kid_gate.lock().await;
            let recent = last.is_some_and(|at| at.elapsed() < remote.policy.unknown_kid_interval);
            if !recent {
                *last = Some(Instant::now());
                let _ = self.fetch(remote).await;
            }
        }
        // The keys may have changed meanwhile, by this fetch or another.
        self.snapshot().verify(token, expect)
    }

    async fn refresh_forever(self) {
        let Some(remote) = &self.inner.remote else {
            return;
        };
        let mut retry = remote.policy.retry;
        loop {
            let wait = match self.fetch(remote).await {
                Ok(ttl) => {
                    retry = remote.policy.retry;
                    ttl
                }
                Err(()) => {
                    let wait = retry;
                    retry = (retry * 2).min(remote.policy.min_ttl);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Fetches the endpoint and swaps its keys in; on failure the last good
    /// keys stay. `Ok` holds how long the new keys are fresh.
    async fn fetch(&self, remote: &Remote) -> Result<Duration, ()> {
        let _one = remote.fetching.lock().await;
        let fetched = remote.get().await;
        let observer = remote.observer.get();
        match fetched {
            Ok((set, ttl)) => {
                let n_keys = set.len();
                let merged = Arc::new(self.inner.fixed.clone().merge(set));
                *self
                    .inner
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = merged;
                if !remote.ready.swap(true, Ordering::AcqRel) {
                    tracing::info!(url = %remote.url, n_keys, "JWKS loaded; ready for tokens.");
                }
                if let Some(observer) = observer {
                    observer.keys_loaded(n_keys);
                    observer.fetched(FetchResult::Ok);
                }
                self.inner.fetched.send_modify(|n| *n += 1);
                tracing::debug!(url = %remote.url, n_keys, ?ttl, "JWKS fetched.");
                Ok(ttl)
            }
            Err((result, reason)) => {
                if let Some(observer) = observer {
                    observer.fetched(result);
                }
                tracing::warn!(url = %remote.url, %reason, "JWKS fetch failed; keeping the last good keys.");
                Err(())
            }
        }
    }
}

impl Remote {
    async fn get(&self) -> Result<(KeySet, Duration), (FetchResult, String)> {
        let unavailable = |err: reqwest::Error| (FetchResult::Unavailable, err.to_string());
        let mut response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(unavailable)?
            .error_for_status()
            .map_err(unavailable)?;
        let ttl = self.policy.ttl(
            response
                .headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err((
                    FetchResult::Invalid,
                    format!("the answer is over {MAX_JWKS_BYTES} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let set = KeySet::from_provider_jwks(&body)
            .map_err(|err| (FetchResult::Invalid, err.to_string()))?;
        Ok((set, ttl))
    }
}

/// `localhost` or a loopback address.
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("current", &self.snapshot())
            .field(
                "jwks_url",
                &self.inner.remote.as_ref().map(|r| r.url.as_str()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_clamped_and_defaults_to_ten_minutes() {
        let policy = JwksPolicy::default();
        assert_eq!(policy.ttl(None), Duration::from_secs(600));
        assert_eq!(policy.ttl(Some("public")), Duration::from_secs(600));
        assert_eq!(
            policy.ttl(Some("public, max-age=3600")),
            Duration::from_secs(3600)
        );
        assert_eq!(policy.ttl(Some("Max-Age=5")), Duration::from_secs(60));
        assert_eq!(
            policy.ttl(Some("max-age=9999999")),
            Duration::from_secs(86_400)
        );
        assert_eq!(policy.ttl(Some("max-age=x")), Duration::from_secs(600));
    }

    #[test]
    fn only_https_or_localhost_urls_are_accepted() {
        let policy = JwksPolicy::default();
        let fixed = KeySet::default;
        assert!(Keys::with_jwks_url(fixed(), "https://idp.example/jwks", policy).is_ok());
        assert!(Keys::with_jwks_url(fixed(), "http://127.0.0.1:9/jwks", policy).is_ok());
        assert!(Keys::with_jwks_url(fixed(), "http://localhost/jwks", policy).is_ok());
        assert!(matches!(
            Keys::with_jwks_url(fixed(), "http://idp.example/jwks", policy),
            Err(JwksUrlError::NotHttps)
        ));
        assert!(Keys::with_jwks_url(fixed(), "file:///etc/jwks", policy).is_err());
        assert!(
            !Keys::with_jwks_url(fixed(), "https://idp.example/jwks", policy)
                .unwrap()
                .ready()
        );
        assert!(Keys::from(KeySet::hs256(b"s")).ready());
    }

    #[tokio::test]
    async fn a_tls_failure_is_an_unavailable_fetch_not_a_panic() {
        // Accepts and hangs up: the TLS client sends its hello, and fails.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            loop {
                let _ = listener.accept().await;
            }
        });
        let url = format!("https://{addr}/jwks");
        let keys = Keys::with_jwks_url(KeySet::default(), &url, JwksPolicy::default()).unwrap();
        let remote = keys.inner.remote.as_ref().unwrap();
        let (result, reason) = remote.get().await.unwrap_err();
        assert_eq!(result, FetchResult::Unavailable, "{reason}");
        assert!(keys.fetch(remote).await.is_err());
        assert!(!keys.ready());
        server.abort();
    }
}
