//! The notification stream's definition, created or updated at start-up.
//!
//! Retention is by age and total bytes only. A per-subject message limit
//! would cut one channel's history while the stream's first sequence stays
//! put, so a resuming client could not tell that it missed anything.

use std::{collections::HashMap, time::Duration};

use async_nats::jetstream::{
    self,
    stream::{Config, DiscardPolicy, Republish, RetentionPolicy, StorageType},
};
use herald_shared::{
    stream::{EPOCH_METADATA_KEY, NOTIFY_STREAM},
    subject::{LIVE_SUBJECTS, NOTIFY_SUBJECTS},
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
}

/// Creates the notification stream, or brings an existing one to `limits`
/// while keeping its epoch. Safe to run from several replicas at once.
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
