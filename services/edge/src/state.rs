//! What every handler and session shares.

use std::{ops::Deref, sync::Arc};

use tokio::sync::Notify;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config, control::Registry, hub::Hub, live::LiveClient, metrics::Metrics,
    presence::Presence, stream_reader::StreamReader, user_slots::UserConnections,
};

/// One pointer to what the node shares: every connection keeps a clone (its
/// session, its attachment, each replay), so a clone costs 8 bytes in the
/// task an idle socket keeps rather than a copy of every handle (over 200).
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<Shared>);

/// The node's shared handles, reached through [`AppState`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) nats: async_nats::Client,
    /// The live path's own connection (the hub's subscriptions).
    pub(crate) live: LiveClient,
    /// The notification stream's epoch, sent in `welcome`.
    pub(crate) epoch: String,
    pub(crate) hub: Arc<Hub>,
    /// This node's own registry, served at `GET /metrics`.
    pub(crate) metrics: Arc<Metrics>,
    /// Every WebSocket session, so a drain can wait for them.
    pub(crate) sessions: TaskTracker,
    /// Cancelled when the node starts draining.
    pub(crate) draining: CancellationToken,
    /// Live connections by user, and the revocations (session control).
    pub(crate) registry: Arc<Registry>,
    /// Each user's connections on this node (`--max-connections-per-user`).
    pub(crate) user_connections: Arc<UserConnections>,
    /// Who is joined to which namespace here, and the presence watchers.
    pub(crate) presence: Arc<Presence>,
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// `live` holds the hub's subscriptions, `history` reads the stream,
    /// `nats` carries the rest (session control, calls, presence).
    pub(crate) fn new(
        config: Config,
        nats: async_nats::Client,
        live: LiveClient,
        history: async_nats::Client,
        epoch: String,
        reconcile: Arc<Notify>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let presence = Arc::new(Presence::new(
            config.node_id.clone(),
            nats.clone(),
            history.clone(),
            config.presence_ttl,
            config.presence_max_members,
            metrics.clone(),
        ));
        let reader =
            StreamReader::new(history, config.replay_page_bytes, config.replay_concurrency);
        Self(Arc::new(Shared {
            presence,
            config,
            hub: Arc::new(Hub::new(live.clone(), reader, reconcile, metrics.clone())),
            live,
            metrics,
            nats,
            epoch,
            sessions: TaskTracker::new(),
            draining: CancellationToken::new(),
            registry: Arc::default(),
            user_connections: Arc::default(),
        }))
    }
}
