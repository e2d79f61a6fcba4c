//! The calendars bucket: one key per calendar (`subject::calendar_key`),
//! changed by compare-and-set on the key's revision, and the domain events
//! of each change published through JetStream before the caller is answered.
//!
//! Why one key per calendar rather than one per event: membership, the
//! events and the rule that spans them (`SLOT_TAKEN`) are then read and
//! written together, and a conflicting change by another replica shows up
//! as a wrong last revision, retried on the fresh value. The cost is that a
//! change rewrites the whole calendar, which `calendar::MAX_EVENTS` bounds.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    header::NATS_MESSAGE_ID,
    jetstream::{
        self,
        kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
    },
};
use herald_shared::{envelope::Envelope, events::EventType, subject::calendar_key, trace_context};

use crate::{
    calendar::{Calendar, CalendarId},
    error::ServiceError,
};

/// Tries of one change against other replicas' changes to the same calendar.
const MAX_ATTEMPTS: u32 = 16;
/// The most bytes one stored calendar may take (NATS's default maximum
/// payload is 1 MiB; headers need some of it).
pub const MAX_CALENDAR_BYTES: usize = 960 * 1024;

/// The calendars, and where their changes are published.
#[derive(Debug, Clone)]
pub struct Store {
    kv: kv::Store,
    jetstream: jetstream::Context,
}

/// What a step of a change decided.
#[derive(Debug)]
pub struct Step<R> {
    /// The reply's result.
    pub result: R,
    /// The domain event of the change, if it changed the events.
    pub envelope: Option<Envelope>,
}

impl Store {
    /// Creates the bucket, or updates it to these settings.
    ///
    /// # Errors
    /// NATS refuses the bucket (no JetStream, no permission).
    pub async fn open(
        jetstream: jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> anyhow::Result<Self> {
        let kv = jetstream
            .create_or_update_key_value(kv::Config {
                bucket: bucket.into(),
                description: "calendar-service: one calendar per key".into(),
                history: 1,
                max_value_size: i32::try_from(MAX_CALENDAR_BYTES).unwrap_or(i32::MAX),
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await?;
        Ok(Self { kv, jetstream })
    }

    /// Reads a calendar as it is now; an empty one when there is none.
    ///
    /// # Errors
    /// `UNAVAILABLE` when the bucket cannot be read or holds no calendar.
    pub async fn read(&self, id: &CalendarId) -> Result<Calendar, ServiceError> {
        Ok(self.load(&calendar_key(id.as_str())).await?.0)
    }

    /// Runs `decide` on the calendar as stored and writes what it leaves
    /// there if it changed anything, retrying on the fresh calendar while
    /// another replica's change wins the compare-and-set; then publishes the
    /// change's domain event and waits for JetStream's ack.
    ///
    /// `decide` may run several times; only its last run counts.
    ///
    /// # Errors
    /// What `decide` returns; `CONFLICT` after [`MAX_ATTEMPTS`];
    /// `CALENDAR_FULL` past [`MAX_CALENDAR_BYTES`]; `UNAVAILABLE` when NATS
    /// fails (the change may then have been written: its event is published
    /// by the calendar's next change).
    pub async fn change<R>(
        &self,
        id: &CalendarId,
        mut decide: impl FnMut(&mut Calendar) -> Result<Step<R>, ServiceError>,
    ) -> Result<R, ServiceError> {
        let key = calendar_key(id.as_str());
        for attempt in 0..MAX_ATTEMPTS {
            let (mut calendar, revision) = self.load(&key).await?;
            // A change whose replica died before its acks: publish it again
            // (same ids, so stored once) before anything newer, keeping the
            // calendar's events in order.
            let leftover = std::mem::take(&mut calendar.outbox);
            self.publish(&leftover).await?;
            let before = calendar.clone();
            let step = decide(&mut calendar)?;
            if calendar == before && step.envelope.is_none() && leftover.is_empty() {
                return Ok(step.result);
            }
            calendar.outbox = step.envelope.into_iter().collect();
            let written = match self.write(&key, &calendar, revision).await? {
                Some(revision) => revision,
                None => {
                    // Another replica changed it first: decide again on its value.
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            };
            if !calendar.outbox.is_empty() {
                self.publish(&calendar.outbox).await?;
                calendar.outbox.clear();
                // Best effort: if another change came in between, it has
                // published this outbox again and replaced it.
                if let Err(err) = self.write(&key, &calendar, written).await {
                    tracing::debug!(error = %err, "Outbox left for the next change.");
                }
            }
            return Ok(step.result);
        }
        Err(ServiceError::Conflict)
    }

    async fn load(&self, key: &str) -> Result<(Calendar, u64), ServiceError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(ServiceError::unavailable)?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                let calendar = serde_json::from_slice(&entry.value).map_err(|err| {
                    ServiceError::Unavailable(format!("stored calendar unreadable: {err}"))
                })?;
                Ok((calendar, entry.revision))
            }
            // Never written, or deleted by an operator: empty. Revision 0
            // makes the write a create, which fails if someone else creates
            // it first.
            _ => Ok((Calendar::default(), 0)),
        }
    }

    /// Writes `calendar` if the key is still at `revision`: the new revision,
    /// or `None` when another write came first.
    async fn write(
        &self,
        key: &str,
        calendar: &Calendar,
        revision: u64,
    ) -> Result<Option<u64>, ServiceError> {
        let bytes = serde_json::to_vec(calendar).expect("a calendar serializes");
        if bytes.len() > MAX_CALENDAR_BYTES {
            return Err(ServiceError::CalendarFull(format!(
                "a calendar takes at most {MAX_CALENDAR_BYTES} bytes"
            )));
        }
        if revision == 0 {
            return match self.kv.create(key, bytes.into()).await {
                Ok(revision) => Ok(Some(revision)),
                Err(err) if err.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                Err(err) => Err(ServiceError::unavailable(err)),
            };
        }
        match self.kv.update(key, bytes.into(), revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(err) => Err(ServiceError::unavailable(err)),
        }
    }

    /// Publishes each envelope on `domain.<type>` with its id as
    /// `Nats-Msg-Id`, and waits for each ack in turn (in order).
    async fn publish(&self, envelopes: &[Envelope]) -> Result<(), ServiceError> {
        for envelope in envelopes {
            let event_type = EventType::parse(&envelope.event_type).ok_or_else(|| {
                ServiceError::Unavailable(format!("unknown type {}", envelope.event_type))
            })?;
            let id = envelope
                .id
                .as_ref()
                .expect("the service gives every envelope an id");
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, id.as_str());
            trace_context::inject(&mut headers);
            let payload = serde_json::to_vec(envelope).expect("an envelope serializes");
            let subject = herald_shared::subject::domain_subject(event_type);
            self.jetstream
                .publish_with_headers(String::from(subject), headers, payload.into())
                .await
                .map_err(ServiceError::unavailable)?
                .await
                .map_err(ServiceError::unavailable)?;
        }
        Ok(())
    }
}

/// A short, growing, jittered wait before deciding again, so replicas
/// racing for one calendar do not keep colliding.
fn backoff(attempt: u32) -> Duration {
    let base = 2u64 << attempt.min(6);
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % base;
    Duration::from_millis(base + jitter)
}
