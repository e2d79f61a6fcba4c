//! The definitions of the publisher's streams and of its domain consumer,
//! created or updated at start-up.
//!
//! Retention of the notification stream is by age and total bytes only. A
//! per-subject message limit would cut one channel's history while the
//! stream's first sequence stays put, so a resuming client could not tell
//! that it missed anything.
//!
//! The domain stream is a work queue: a message is removed once the publisher
//! acks it. Its one durable consumer is shared by every replica and hands out
//! one message at a time, which is what keeps domain events in order.

use std::{collections::HashMap, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{self, AckPolicy, DeliverPolicy, PriorityPolicy, PullConsumer},
    stream::{Config, DiscardPolicy, Republish, RetentionPolicy, StorageType},
};
use herald_shared::{
    envelope::MAX_ENVELOPE_BYTES,
    stream::{
        DEAD_LETTER_STREAM, DOMAIN_CONSUMER, DOMAIN_STREAM, EPOCH_METADATA_KEY, NOTIFY_STREAM,
        PRESENCE_STREAM,
    },
    subject::{
        DEAD_LETTER_SUBJECTS, DOMAIN_SUBJECTS, LIVE_SUBJECTS, NOTIFY_SUBJECTS, PRESENCE_SUBJECTS,
    },
};

/// Operator-tunable limits of the notification stream.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Notifications older than this are removed (the replay horizon).
    pub max_age: Duration,
    /// Past this many bytes the oldest notifications are removed.
    pub max_bytes: i64,
    /// A repeated `Nats-Msg-Id` within this window is not stored again.
    pub dedup_window: Duration,
    /// Copies JetStream keeps of the stream (`--stream-replicas`): 1 on a
    /// single server, 3 on a cluster so that a node may die.
    pub replicas: usize,
}

/// How the publisher consumes domain events from NATS (`--ingest-*` flags).
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// How long a delivered domain message may go unacknowledged before
    /// JetStream hands it out again (the publisher that had it is presumed dead).
    pub ack_wait: Duration,
    /// Deliveries of a message that keeps failing to be stored (NATS trouble)
    /// before it is dead-lettered with `NATS_UNAVAILABLE`; at least 1.
    pub max_attempts: u32,
    /// Domain messages out to the one active publisher at once (the
    /// consumer's `max_ack_pending`); at least 1.
    pub window: u32,
    /// Copies of the domain and dead-letter streams and of the domain
    /// consumer (`--stream-replicas`, as for the notification stream).
    pub replicas: usize,
}

/// The priority group every replica pulls the domain consumer with.
pub(crate) const DOMAIN_PRIORITY_GROUP: &str = "publishers";

/// Unprocessed domain events older than this are dropped.
const DOMAIN_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Dead letters older than this are dropped.
const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Room for headers (`Nats-Msg-Id`, `traceparent`) above the envelope limit.
const DOMAIN_HEADER_ALLOWANCE: usize = 4 * 1024;

/// Why the domain stream, the dead-letter stream or the domain consumer could
/// not be ensured.
#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error("ensuring stream {stream}: {source}")]
    Stream {
        stream: &'static str,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("ensuring consumer {DOMAIN_CONSUMER} on {DOMAIN_STREAM}: {0}")]
    Consumer(#[source] jetstream::stream::ConsumerError),
}

/// Creates or updates the domain stream, the dead-letter stream and the
/// domain consumer, and returns the consumer. Idempotent, and safe to run
/// from several replicas at once: creating a stream or a consumer that
/// exists with the same configuration succeeds, and the consumer is created
/// with JetStream's create-or-update action under one durable name, so
/// replicas never add a second (overlapping) consumer to the work queue.
///
/// # Errors
/// JetStream is unreachable or refuses a configuration (e.g. another
/// consumer without a filter already takes the work queue).
pub async fn ensure_domain_streams(
    jetstream: &jetstream::Context,
    limits: &IngestLimits,
) -> Result<PullConsumer, EnsureError> {
    jetstream
        .create_or_update_stream(dead_letter_config(limits.replicas))
        .await
        .map_err(|source| EnsureError::Stream {
            stream: DEAD_LETTER_STREAM,
            source,
        })?;
    jetstream
        .create_or_update_stream(domain_config(limits.replicas))
        .await
        .map_err(|source| EnsureError::Stream {
            stream: DOMAIN_STREAM,
            source,
        })?;
    jetstream
        .create_consumer_on_stream(domain_consumer_config(limits), DOMAIN_STREAM)
        .await
        .map_err(EnsureError::Consumer)
}

fn domain_config(replicas: usize) -> Config {
    Config {
        name: DOMAIN_STREAM.into(),
        description: Some("Domain events for Herald's publishers; removed once processed".into()),
        subjects: vec![DOMAIN_SUBJECTS.into()],
        storage: StorageType::File,
        retention: RetentionPolicy::WorkQueue,
        discard: DiscardPolicy::Old,
        max_age: DOMAIN_MAX_AGE,
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        // An oversized event is refused to its publisher at once, like a 413
        // over HTTP, instead of being dead-lettered later.
        max_message_size: i32::try_from(MAX_ENVELOPE_BYTES + DOMAIN_HEADER_ALLOWANCE)
            .unwrap_or(i32::MAX),
        num_replicas: replicas,
        ..Default::default()
    }
}

fn dead_letter_config(replicas: usize) -> Config {
    Config {
        name: DEAD_LETTER_STREAM.into(),
        description: Some("Domain messages Herald refused, with the reason and the payload".into()),
        subjects: vec![DEAD_LETTER_SUBJECTS.into()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: DEAD_LETTER_MAX_AGE,
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        num_replicas: replicas,
        ..Default::default()
    }
}

fn domain_consumer_config(limits: &IngestLimits) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(DOMAIN_CONSUMER.into()),
        description: Some(
            "Herald publishers (all replicas): domain events to notifications".into(),
        ),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: limits.ack_wait,
        // The publisher decides when to give up (`max_attempts`) and dead-letters
        // the message first; JetStream giving up would drop it silently.
        max_deliver: -1,
        // One replica at a time takes domain messages (the pinned client; the
        // others stand by and take over when it stops pulling), a window of
        // them in stream order, and stores them in that order: an `updated` is
        // never stored after the `deleted` that followed it.
        max_ack_pending: i64::from(limits.window.max(1)),
        priority_policy: PriorityPolicy::PinnedClient,
        priority_groups: vec![DOMAIN_PRIORITY_GROUP.into()],
        priority_timeout: limits.ack_wait,
        // Inherited (0): JetStream keeps a work queue's consumer at its
        // stream's count and moves it along when the stream is scaled; an
        // explicit count would be refused until the stream has moved.
        num_replicas: 0,
        ..Default::default()
    }
}

/// Creates the notification stream, or brings an existing one to `limits`
/// (its replica count included: JetStream moves it) while keeping its
/// epoch. Safe to run from several replicas at once.
///
/// # Errors
/// JetStream is unreachable or refuses the configuration.
pub async fn ensure_notify_stream(
    jetstream: &jetstream::Context,
    limits: &StreamLimits,
) -> anyhow::Result<String> {
    // Two replicas may race to create the stream; the loser updates instead.
    for _ in 0..3 {
        match jetstream.get_stream(NOTIFY_STREAM).await {
            Ok(stream) => {
                let existing = stream
                    .cached_info()
                    .config
                    .metadata
                    .get(EPOCH_METADATA_KEY)
                    .cloned();
                let epoch = existing.unwrap_or_else(new_epoch);
                jetstream
                    .update_stream(notify_config(limits, &epoch))
                    .await?;
                return Ok(epoch);
            }
            Err(err) if is_not_found(&err) => {
                let epoch = new_epoch();
                match jetstream.create_stream(notify_config(limits, &epoch)).await {
                    Ok(_) => {
                        tracing::info!(stream = NOTIFY_STREAM, %epoch, "Created the notification stream.");
                        return Ok(epoch);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "Creating the stream raced; retrying.")
                    }
                }
            }
            Err(err) => return Err(err.into()),
        }
    }
    anyhow::bail!("could not create or update stream {NOTIFY_STREAM}")
}

fn notify_config(limits: &StreamLimits, epoch: &str) -> Config {
    Config {
        name: NOTIFY_STREAM.into(),
        description: Some(
            "Herald notifications: one message per (event, recipient channel)".into(),
        ),
        subjects: vec![NOTIFY_SUBJECTS.into()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: limits.max_age,
        max_bytes: limits.max_bytes,
        max_messages: -1,
        max_messages_per_subject: -1,
        duplicate_window: limits.dedup_window.min(limits.max_age),
        num_replicas: limits.replicas,
        allow_direct: true,
        republish: Some(Republish {
            source: NOTIFY_SUBJECTS.into(),
            destination: LIVE_SUBJECTS.into(),
            headers_only: false,
        }),
        metadata: HashMap::from([(EPOCH_METADATA_KEY.to_string(), epoch.to_string())]),
        ..Default::default()
    }
}

/// How long the marker JetStream leaves when an edge's presence set ages
/// out is kept (nats-server wants at least a second).
const PRESENCE_MARKER_TTL: Duration = Duration::from_secs(60);
/// Presence sets are small (a user id and a count per member); this bounds
/// what a misbehaving writer could pile up.
const PRESENCE_MAX_BYTES: i64 = 256 << 20;

/// Creates the presence stream or brings an existing one to this
/// configuration. Safe to run from several replicas at once.
///
/// # Errors
/// JetStream is unreachable or refuses the configuration (a server older
/// than 2.11 knows no per-message TTL).
pub async fn ensure_presence_stream(
    jetstream: &jetstream::Context,
    replicas: usize,
) -> Result<(), EnsureError> {
    jetstream
        .create_or_update_stream(presence_config(replicas))
        .await
        .map(drop)
        .map_err(|source| EnsureError::Stream {
            stream: PRESENCE_STREAM,
            source,
        })
}

/// One subject per (namespace, edge), its last message only, each message
/// with its own TTL (`Nats-TTL`, which needs `allow_msg_ttl`). An edge that
/// dies stops rewriting its sets, so they age out, and JetStream leaves a
/// delete marker in their place. nats-server turns roll-ups on for delete
/// markers (and refuses them without on a pedantic request), so they are
/// asked for here, which keeps the update idempotent. With one message per
/// subject the server also leaves the message TTL alone (with more it
/// raises it to the marker's TTL).
fn presence_config(replicas: usize) -> Config {
    Config {
        name: PRESENCE_STREAM.into(),
        description: Some("Herald presence: each edge's users per namespace, with a TTL".into()),
        subjects: vec![PRESENCE_SUBJECTS.into()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_bytes: PRESENCE_MAX_BYTES,
        max_messages: -1,
        max_messages_per_subject: 1,
        num_replicas: replicas,
        allow_direct: true,
        allow_message_ttl: true,
        subject_delete_marker_ttl: Some(PRESENCE_MARKER_TTL),
        allow_rollup: true,
        ..Default::default()
    }
}

/// A new epoch: time-ordered, so a later stream's epoch sorts after an earlier one's.
fn new_epoch() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn is_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(
        err.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}
