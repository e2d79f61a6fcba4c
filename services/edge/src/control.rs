//! Session control on this edge: the registry of its live connections by
//! user (WebSocket and SSE alike), the revocations it refuses tokens by, and
//! the two NATS feeds that drive them.
//!
//! One core subscription to every user's session control subject (not one
//! per user) brings the publisher's `disconnect` and `unsubscribe` calls; one
//! key-value watch of the revocations bucket keeps the in-memory revocations,
//! loaded before the edge serves, so an edge started after a revocation
//! refuses the revoked tokens too. A revocation arriving through the watch
//! also ends the user's connections whose token it covers, so an edge that
//! missed the core message (a NATS reconnect) still ends them.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use futures_util::{StreamExt, task::AtomicWaker};
use herald_shared::{
    ids::{Namespace, UserId},
    session_control::{Control, REVOCATIONS_BUCKET, Revocation},
    subject::{
        SESSION_CONTROL_SUBJECTS, user_from_revocation_key, user_from_session_control_subject,
    },
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[cfg(test)]
use self::commands::COMMAND_QUEUE;
pub(crate) use self::commands::{Command, Commands};

mod commands;

/// How long the start-up load of the revocations may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How often moot revocations are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How soon a watch that ended is started again.
const REWATCH_AFTER: Duration = Duration::from_secs(1);

/// The node's live connections by user, and the revocations.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    users: Mutex<HashMap<UserId, Vec<Arc<Handle>>>>,
    revocations: RwLock<HashMap<UserId, Revocation>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Handle {
    id: u64,
    /// The current token's `iat` (an `auth` refresh changes it).
    iat: Mutex<Option<u64>>,
    /// The connection's stop signal, cancelled to end it.
    stop: CancellationToken,
    revoked: AtomicBool,
    /// Commands not yet taken, at most [`COMMAND_QUEUE`]. A queue and a
    /// waker rather than a channel: a tokio channel allocates about 1 KiB
    /// up front, per idle connection, for commands that come rarely.
    commands: Mutex<VecDeque<Command>>,
    /// The connection's task, woken when a command is queued.
    waker: AtomicWaker,
}

/// A connection's place in the registry, removed on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    user: UserId,
    handle: Arc<Handle>,
}

impl Registry {
    /// Registers a connection of `user`, ended through `stop`; returns its
    /// registration and the receiver of its commands. A token revoked
    /// meanwhile (between admission and now) ends it at once.
    pub(crate) fn register(
        self: &Arc<Self>,
        user: &UserId,
        iat: Option<u64>,
        stop: CancellationToken,
    ) -> (Registration, Commands) {
        let handle = Arc::new(Handle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            iat: Mutex::new(iat),
            stop,
            revoked: AtomicBool::new(false),
            commands: Mutex::default(),
            waker: AtomicWaker::new(),
        });
        self.users
            .lock()
            .expect("registry lock")
            .entry(user.clone())
            .or_default()
            .push(handle.clone());
        if self.is_revoked(user, iat) {
            handle.revoke();
        }
        let commands = Commands {
            handle: handle.clone(),
        };
        let registration = Registration {
            registry: self.clone(),
            user: user.clone(),
            handle,
        };
        (registration, commands)
    }

    /// Whether a token of `user` issued at `iat` is revoked.
    pub(crate) fn is_revoked(&self, user: &UserId, iat: Option<u64>) -> bool {
        self.revocations
            .read()
            .expect("revocations lock")
            .get(user)
            .is_some_and(|revocation| revocation.refuses(iat, unix_now()))
    }

    /// Ends the user's connections whose token `refused` says so.
    fn disconnect(&self, user: &UserId, refused: impl Fn(Option<u64>) -> bool) -> usize {
        let users = self.users.lock().expect("registry lock");
        let Some(handles) = users.get(user) else {
            return 0;
        };
        let mut n = 0;
        for handle in handles {
            if refused(*handle.iat.lock().expect("iat lock")) {
                handle.revoke();
                n += 1;
            }
        }
        n
    }

    fn unsubscribe(&self, user: &UserId, namespace: &Namespace) {
        let users = self.users.lock().expect("registry lock");
        for handle in users.get(user).into_iter().flatten() {
            if !handle.command(Command::Unsubscribe(namespace.clone())) {
                tracing::warn!(%user, %namespace, "A connection's command queue is full; unsubscribe dropped.");
            }
        }
    }

    fn apply(&self, control: Control, user: &UserId) {
        match control {
            Control::Disconnect { revocation } => {
                if let Some(revocation) = revocation {
                    self.keep(user, revocation);
                }
                let n = self.disconnect(user, |_| true);
                tracing::info!(%user, n_connections = n, "Disconnected by the session API.");
            }
            Control::Unsubscribe { namespace } => self.unsubscribe(user, &namespace),
        }
    }

    /// Keeps `revocation` unless a later one is kept already (the bucket
    /// and the core message may bring the same one, in either order).
    fn keep(&self, user: &UserId, revocation: Revocation) {
        let mut revocations = self.revocations.write().expect("revocations lock");
        let kept = revocations.entry(user.clone()).or_insert(revocation);
        if kept.revoked_before < revocation.revoked_before {
            *kept = revocation;
        }
    }

    /// Keeps `revocation` (or forgets the user's, with `None`), and ends the
    /// connections whose token it covers.
    fn revoke(&self, user: UserId, revocation: Option<Revocation>) {
        let Some(revocation) = revocation else {
            self.revocations
                .write()
                .expect("revocations lock")
                .remove(&user);
            return;
        };
        self.keep(&user, revocation);
        let now = unix_now();
        let n = self.disconnect(&user, |iat| revocation.refuses(iat, now));
        if n > 0 {
            tracing::info!(%user, n_connections = n, "Revoked tokens: connections ended.");
        }
    }

    /// Forgets revocations no token can be refused by any more.
    fn prune(&self) {
        let now = unix_now();
        self.revocations
            .write()
            .expect("revocations lock")
            .retain(|_, revocation| revocation.expires > now);
    }

    fn applies(&self, entry: kv::Entry) {
        let Some(user) = user_from_revocation_key(&entry.key) else {
            tracing::debug!(
                key = entry.key,
                "Ignored a revocations key of another shape."
            );
            return;
        };
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Revocation>(&entry.value) {
                Ok(revocation) => self.revoke(user, Some(revocation)),
                Err(err) => tracing::warn!(error = %err, "Ignored a malformed revocation."),
            },
            kv::Operation::Delete | kv::Operation::Purge => self.revoke(user, None),
        }
    }
}

impl Handle {
    fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
        self.stop.cancel();
    }
}

impl Registration {
    /// Whether the session API ended this connection (its stop was cancelled for it).
    pub(crate) fn is_revoked(&self) -> bool {
        self.handle.revoked.load(Ordering::Acquire)
    }

    /// After an `auth` refresh: the new token's `iat`.
    pub(crate) fn set_iat(&self, iat: Option<u64>) {
        *self.handle.iat.lock().expect("iat lock") = iat;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut users = self.registry.users.lock().expect("registry lock");
        if let Some(handles) = users.get_mut(&self.user) {
            handles.retain(|handle| handle.id != self.handle.id);
            if handles.is_empty() {
                users.remove(&self.user);
            }
        }
    }
}

/// Loads the revocations (waiting for the publisher's bucket), then follows
/// them and the session control subject until aborted.
///
/// # Errors
/// The first load failed or timed out, or the subscription failed.
pub(crate) async fn start(
    nats: &async_nats::Client,
    registry: Arc<Registry>,
) -> anyhow::Result<JoinHandle<()>> {
    let jetstream = jetstream::new(nats.clone());
    let store = wait_for_bucket(&jetstream).await;
    let mut watch = load(&store, &registry).await?;
    let mut control = nats
        .subscribe(SESSION_CONTROL_SUBJECTS)
        .await
        .context("subscribing to session control")?;
    nats.flush()
        .await
        .context("subscribing to session control")?;
    Ok(tokio::spawn(async move {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                message = control.next() => {
                    let Some(message) = message else { break };
                    let Some(user) = user_from_session_control_subject(&message.subject) else {
                        continue;
                    };
                    match serde_json::from_slice::<Control>(&message.payload) {
                        Ok(command) => registry.apply(command, &user),
                        Err(err) => tracing::warn!(error = %err, "Ignored a malformed session control message."),
                    }
                }
                entry = watch.next() => match entry {
                    Some(Ok(entry)) => registry.applies(entry),
                    Some(Err(err)) => tracing::warn!(error = %err, "Watching the revocations failed."),
                    None => {
                        // Watch again from the last value of every key: applying
                        // them twice is harmless.
                        tokio::time::sleep(REWATCH_AFTER).await;
                        match store.watch_with_history(">").await {
                            Ok(again) => watch = again,
                            Err(err) => tracing::warn!(error = %err, "Watching the revocations failed."),
                        }
                    }
                },
                _ = prune.tick() => registry.prune(),
            }
        }
    }))
}

/// Starts the watch and applies every stored revocation, so none is missed
/// when the edge starts serving (bounded: entries that expire meanwhile
/// would otherwise keep it waiting).
async fn load(store: &kv::Store, registry: &Registry) -> anyhow::Result<kv::Watch> {
    let mut watch = store
        .watch_with_history(">")
        .await
        .context("watching the revocations")?;
    // Created before the count is read: anything put in between comes through the watch.
    let status = store.status().await.context("reading the revocations")?;
    if status.values() == 0 {
        return Ok(watch);
    }
    let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, watch.next()).await else {
            tracing::warn!("Loading the revocations timed out; serving with what arrived.");
            break;
        };
        let Some(entry) = next else { break };
        let entry = entry.context("loading the revocations")?;
        let current = entry.seen_current || entry.delta == 0;
        registry.applies(entry);
        if current {
            break;
        }
    }
    tracing::info!(
        n_revocations = registry.revocations.read().expect("revocations lock").len(),
        "Revocations loaded."
    );
    Ok(watch)
}

/// The publisher creates the bucket; an edge started first waits for it.
async fn wait_for_bucket(jetstream: &jetstream::Context) -> kv::Store {
    let mut attempt = 0u32;
    loop {
        match jetstream.get_key_value(REVOCATIONS_BUCKET).await {
            Ok(store) => return store,
            Err(err) => {
                if attempt.is_multiple_of(20) {
                    tracing::warn!(error = %err, bucket = REVOCATIONS_BUCKET, "Waiting for the revocations bucket.");
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
