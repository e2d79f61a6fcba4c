//! An identity provider's JWKS endpoint: a real HTTP server on `127.0.0.1:0`
//! serving a key set the test rotates, counting the requests it gets, and
//! able to go down (503) and come back.
//!
//! The keys are the fixed test keys of `shared/testdata` (an RSA and a P-256
//! key), published under whatever `kid`s a test names: what a provider's
//! rotation changes, as far as a verifier can tell, is which kids it serves.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

use crate::WAIT;

const JWKS: &str = include_str!("../../shared/testdata/jwks.json");
const RSA_PRIVATE: &str = include_str!("../../shared/testdata/rsa_private.pem");
const EC_PRIVATE: &str = include_str!("../../shared/testdata/ec_private.pem");

/// Which test key: each signs with its own algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKey {
    /// RS256.
    Rsa,
    /// ES256 (P-256).
    Ec,
}

/// A running JWKS endpoint.
#[derive(Debug)]
pub struct JwksServer {
    /// `http://127.0.0.1:<port>/.well-known/jwks.json`
    pub url: String,
    shared: Arc<Shared>,
    requests: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    keys: Mutex<Vec<(TestKey, String)>>,
    cache_control: Mutex<Option<String>>,
    down: AtomicBool,
    count: AtomicUsize,
    requests: watch::Sender<usize>,
}

impl TestKey {
    /// This key's public JWK, published as `kid`.
    pub fn jwk(self, kid: &str) -> Value {
        let set: Value = serde_json::from_str(JWKS).expect("the test JWKS");
        let template = match self {
            Self::Rsa => "rsa-1",
            Self::Ec => "ec-1",
        };
        let mut jwk = set["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["kid"] == template)
            .expect("the test key")
            .clone();
        jwk["kid"] = json!(kid);
        jwk
    }

    /// Signs `claims` with this key, naming `kid` in the header.
    pub fn sign(self, kid: &str, claims: &Value) -> String {
        let (algorithm, key) = match self {
            Self::Rsa => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("the RSA test key"),
            ),
            Self::Ec => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("the EC test key"),
            ),
        };
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &key).expect("signing a token")
    }
}

impl JwksServer {
    /// Serves `keys` (key, kid), with no `Cache-Control`.
    pub async fn start(keys: &[(TestKey, &str)]) -> Self {
        let (requests_tx, requests) = watch::channel(0);
        let shared = Arc::new(Shared {
            keys: Mutex::new(Vec::new()),
            cache_control: Mutex::new(None),
            down: AtomicBool::new(false),
            count: AtomicUsize::new(0),
            requests: requests_tx,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the JWKS server");
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route("/.well-known/jwks.json", get(serve))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let server = Self {
            url: format!("http://{addr}/.well-known/jwks.json"),
            shared,
            requests,
            task,
        };
        server.serve_keys(keys);
        server
    }

    /// Keys fetched from this provider, as a service's config holds them, with
    /// the test's timings: a `max-age` floor of 200 ms (so `max-age=1` is kept
    /// as is) and failed fetches retried within 50 ms.
    pub fn keys(&self) -> herald_shared::jwks::Keys {
        let policy = herald_shared::jwks::JwksPolicy {
            min_ttl: std::time::Duration::from_millis(200),
            retry: std::time::Duration::from_millis(50),
            ..herald_shared::jwks::JwksPolicy::default()
        };
        herald_shared::jwks::Keys::with_jwks_url(
            herald_shared::jwt::KeySet::default(),
            &self.url,
            policy,
        )
        .expect("a valid JWKS URL")
    }

    /// From now on, serve these keys.
    pub fn serve_keys(&self, keys: &[(TestKey, &str)]) {
        *self.shared.keys.lock().unwrap() = keys
            .iter()
            .map(|(key, kid)| (*key, kid.to_string()))
            .collect();
    }

    /// From now on, answer with this `Cache-Control` header (or none).
    pub fn cache_control(&self, value: Option<&str>) {
        *self.shared.cache_control.lock().unwrap() = value.map(Into::into);
    }

    /// Down: every request gets 503. Up: the keys again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.shared.count.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `n` requests have been answered.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut requests = self.requests.clone();
        tokio::time::timeout(WAIT, requests.wait_for(|&count| count >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} JWKS requests in time; got {}", self.requests()))
            .expect("the JWKS server runs");
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(State(shared): State<Arc<Shared>>) -> Response {
    let response = if shared.down.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    } else {
        let keys: Vec<Value> = shared
            .keys
            .lock()
            .unwrap()
            .iter()
            .map(|(key, kid)| key.jwk(kid))
            .collect();
        let body = json!({ "keys": keys }).to_string();
        let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(value) = shared.cache_control.lock().unwrap().as_deref() {
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, value.parse().unwrap());
        }
        response
    };
    // Counted as answered once the answer is built; the count notifies waiters.
    let count = shared.count.fetch_add(1, Ordering::SeqCst) + 1;
    shared.requests.send_replace(count);
    response
}

/// Waits (at most [`WAIT`]) until a refresh of `keys` has dropped `kid`.
pub async fn until_dropped(keys: &herald_shared::jwks::Keys, kid: &str) {
    let mut fetches = keys.fetches();
    tokio::time::timeout(WAIT, fetches.wait_for(|_| !keys.snapshot().has_kid(kid)))
        .await
        .unwrap_or_else(|_| panic!("a refresh drops kid {kid}"))
        .unwrap();
}
