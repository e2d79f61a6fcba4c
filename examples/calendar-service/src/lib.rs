//! calendar-service: an example domain service behind Herald.
//!
//! Browsers call `calendar.event.*` methods over their Herald socket; the
//! edge validates each call and sends it as a NATS request to
//! `rpc.<method>` with the caller in `Herald-User`. This service answers
//! those requests in a queue group (run as many replicas as you like; each
//! request goes to one), keeps the calendars in a NATS key-value bucket, and
//! publishes each change as a `calendar.event.*` domain event on
//! `domain.<type>` through JetStream, which Herald's publisher turns into
//! notifications for every member's sockets.
//!
//! `run` serves until its shutdown future completes; then it stops taking
//! requests, answers those it holds, and drains its NATS connection.

pub mod calendar;
pub mod config;
pub mod error;
pub mod handle;
mod service;
pub mod store;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

pub use crate::config::{Args, Config};
use crate::{handle::Handler, store::Store};

/// Starts the service and answers requests until `shutdown` completes.
///
/// # Errors
/// As [`Service::start`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Service::start(config).await?.serve(shutdown).await
}

/// A replica that is subscribed and answering (once [`Service::serve`] runs).
#[derive(Debug)]
pub struct Service {
    nats: async_nats::Client,
    config: Config,
    handler: Handler,
    subscribers: Vec<async_nats::Subscriber>,
    answered: Arc<AtomicU64>,
}

impl Service {
    /// Connects to NATS, opens the bucket, adds the seeded members, and
    /// subscribes: requests sent once this returns reach this replica (or
    /// another of its queue group).
    ///
    /// # Errors
    /// NATS cannot be reached, or the bucket cannot be created.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let nats = herald_shared::nats::connect(
            &config.nats_url,
            &config.nats_auth,
            "calendar-service",
            None,
        )
        .await?;
        let jetstream = async_nats::jetstream::new(nats.clone());
        let store = Store::open(jetstream, &config.bucket, config.replicas).await?;
        let handler = Handler {
            store,
            auto_join: config.auto_join,
        };
        for (calendar, members) in &config.seed_members {
            handler
                .seed(calendar, members)
                .await
                .map_err(|err| anyhow::anyhow!("seeding calendar {}: {err}", calendar.as_str()))?;
        }
        let subscribers = service::subscribe(&nats, &config).await?;
        Ok(Self {
            nats,
            config,
            handler,
            subscribers,
            answered: Arc::default(),
        })
    }

    /// How many requests this replica has answered so far (a counter that
    /// keeps counting while it serves).
    pub fn answered(&self) -> Arc<AtomicU64> {
        self.answered.clone()
    }

    /// Answers requests until `shutdown` completes, then drains.
    ///
    /// # Errors
    /// The NATS connection fails while draining.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let answered = self.answered.clone();
        service::serve(
            &self.nats,
            &self.config,
            self.subscribers,
            self.handler,
            move || {
                answered.fetch_add(1, Ordering::Relaxed);
            },
            shutdown,
        )
        .await?;
        self.nats.drain().await?;
        tracing::info!("Calendar service drained.");
        Ok(())
    }
}
