//! What every request handler shares.

use std::sync::Arc;

use async_nats::jetstream;
use herald_shared::{jwt::ServiceClaims, token_cache::TokenCache};

use crate::{config::Config, metrics::Metrics, quota::Quotas};

/// Cheap to clone: the NATS handles are `Clone`, the config sits behind an `Arc`.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) config: Arc<Config>,
    pub(crate) nats: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    /// This publisher's own registry, served at `GET /metrics`.
    pub(crate) metrics: Arc<Metrics>,
    /// Each service's remaining allowance (HTTP only).
    pub(crate) quotas: Arc<Quotas>,
    /// The revocations bucket the session API writes.
    pub(crate) revocations: jetstream::kv::Store,
    /// Service tokens verified before: a service sends the same token with
    /// every request, and verifying it is most of a publish's token cost.
    pub(crate) service_tokens: Arc<TokenCache<ServiceClaims>>,
}

impl AppState {
    pub(crate) fn new(
        config: Config,
        nats: async_nats::Client,
        jetstream: jetstream::Context,
        metrics: Arc<Metrics>,
        revocations: jetstream::kv::Store,
    ) -> Self {
        Self {
            quotas: Arc::new(Quotas::new(&config.limits)),
            config: Arc::new(config),
            nats,
            jetstream,
            metrics,
            revocations,
            service_tokens: Arc::default(),
        }
    }
}
