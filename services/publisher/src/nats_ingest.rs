//! NATS ingest: domain events from the domain stream (`domain.<type>`),
//! stored exactly as over HTTP, or dead-lettered.
//!
//! Every replica pulls the one durable consumer in one priority group, and
//! JetStream pins it to one of them at a time: the others stand by, and one
//! takes over when the pinned one stops pulling (`priority_timeout`, the ack
//! wait). The pinned replica takes up to `window` messages at once, in stream
//! order, and sends each one's notifications before the next one's, so
//! JetStream stores them in domain-stream order without a round trip per
//! event. A message is acked only after its own notifications are stored.
//! After a takeover, newer messages wait for the ones the previous replica
//! held (`sequencer`).
//!
//! One that cannot be stored (NATS or JetStream trouble) is retried in place,
//! with a delay that doubles per attempt, before anything more is taken; after
//! `max_attempts` (deliveries by JetStream included) it is dead-lettered.
//! A store lost with a stream leader that died fails only at its timeout, and
//! one sent after a new leader is elected would be stored before it: so while
//! the oldest store in hand has waited a second for its ack (`STALLED`; an
//! election takes 4-9 s), nothing more is sent. What remains is the exception
//! to stream order: a store lost in a NATS reconnect or a leadership handover
//! (lame duck, stepdown) and one sent right after it that succeeds; the later
//! one is stored first. An invalid message is written to the dead-letter
//! stream with the error and the payload, then terminated.
//!
//! Redeliveries are harmless: an envelope without `id` gets one derived from
//! the message's place in the domain stream, and a dead letter's `Nats-Msg-Id`
//! is derived the same way, so JetStream's dedup windows store each once.

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::{
    HeaderMap,
    header::NATS_MESSAGE_ID,
    jetstream::{
        self, AckKind, Message,
        consumer::{
            PullConsumer, StreamError,
            pull::{MessagesError, Stream as Messages},
        },
    },
};
use futures_util::{StreamExt, future, stream::FuturesOrdered};
use herald_shared::{
    api::DeadLetter,
    envelope::{MAX_ENVELOPE_BYTES, Refused, ValidEvent, parse_event_with_defaults},
    error_code::{ErrorBody, ErrorCode, FieldError},
    ids::EventId,
    subject::{dead_letter_message_id, dead_letter_subject, event_type_from_domain_subject},
    timestamp::Timestamp,
    trace_context,
};
use time::OffsetDateTime;
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};
use tracing::Instrument;

use crate::{
    metrics::{Metrics, Source},
    publish::{PublishError, check_stored_bytes, publish, send},
    sequencer::Sequencer,
    streams::{DOMAIN_PRIORITY_GROUP, EnsureError, IngestLimits, ensure_domain_streams},
};

/// How long to wait before setting the consumer up again after it failed.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// The retry delay after a first failed delivery; it doubles per delivery.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The longest retry delay.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// A store in hand this long without its ack may have gone to a stream
/// leader that is gone: nothing more is sent until it is settled. Far above
/// a healthy ack (milliseconds, tens under load), far below an election
/// (nats-server's Raft waits 4-9 s before electing a new leader), so nothing
/// sent to the next leader can overtake a store lost with the last one.
const STALLED: Duration = Duration::from_secs(1);
/// While newer messages wait for older ones, the consumer's ack floor is read
/// again this often: a read that failed (the consumer's leader was being
/// elected) or a floor that moved since would otherwise wait the whole gap
/// bound (twice the ack wait, 61 s by default).
const FLOOR_RECHECK: Duration = Duration::from_secs(1);

/// The consumer loop stopped for a reason other than shutdown; it is set up again.
#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error(transparent)]
    Setup(#[from] EnsureError),
    #[error("pulling domain messages: {0}")]
    Pull(#[from] StreamError),
    #[error("receiving domain messages: {0}")]
    Messages(#[from] MessagesError),
    #[error("the domain message stream ended")]
    Ended,
}

/// What the ingest loop needs; built by `run` from the configuration.
#[derive(Debug)]
pub(crate) struct Ingest {
    pub(crate) jetstream: jetstream::Context,
    pub(crate) limits: IngestLimits,
    /// Acks in flight per event, as for an HTTP request.
    pub(crate) publish_window: usize,
    /// Larger events are dead-lettered (`PAYLOAD_TOO_LARGE`), as over HTTP.
    pub(crate) max_event_stored_bytes: u64,
    /// Shared with the HTTP side.
    pub(crate) metrics: Arc<Metrics>,
}

/// Where a domain message came from, read off its JetStream metadata.
#[derive(Debug)]
struct Delivery {
    subject: String,
    stream_seq: u64,
    /// This delivery included; 1 the first time.
    deliveries: u64,
    /// When JetStream stored the message: the same on every redelivery.
    stored_at: OffsetDateTime,
}

/// A message taken up, finishing its work: the message and what became of it.
type InHand<'a> = Pin<Box<dyn Future<Output = (Message, Handled)> + Send + 'a>>;

/// The messages in hand, in stream order, with when each was sent.
struct InFlight<'a> {
    work: FuturesOrdered<InHand<'a>>,
    sent_at: VecDeque<Instant>,
}

impl<'a> InFlight<'a> {
    fn new() -> Self {
        Self {
            work: FuturesOrdered::new(),
            sent_at: VecDeque::new(),
        }
    }

    fn push(&mut self, work: InHand<'a>) {
        self.sent_at.push_back(Instant::now());
        self.work.push_back(work);
    }

    /// The oldest message's outcome, once its work is done (cancel safe).
    async fn next(&mut self) -> Option<(Message, Handled)> {
        let done = self.work.next().await;
        if done.is_some() {
            self.sent_at.pop_front();
        }
        done
    }

    /// The oldest store has waited [`STALLED`] or longer for its ack.
    fn stalled(&self) -> bool {
        self.sent_at
            .front()
            .is_some_and(|sent| sent.elapsed() >= STALLED)
    }
}

/// What became of a message whose work is done: either how to answer
/// JetStream, or a store that failed and is to be tried again. One or the
/// other, never both.
enum Handled {
    Settle(Settle),
    /// Boxed: rare, and far larger than a settle.
    StoreFailed(Box<Failure>),
}

/// Storing a valid event failed (NATS or JetStream trouble): retried.
struct Failure {
    delivery: Delivery,
    event: ValidEvent,
    error: PublishError,
}

/// What to do with a store that failed, when settling what is in hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnFailure {
    /// Retry it in place, nothing after it going out meanwhile.
    RetryInPlace,
    /// Leave it to a redelivery: shutting down, or setting the consumer up again.
    Redeliver,
}

/// How to answer JetStream about a message once it is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Its notifications are stored: remove it.
    Ack,
    /// It is dead-lettered: remove it, never deliver it again.
    Terminate,
    /// Hand it out again after this delay; nothing after it goes out meanwhile.
    Retry(Duration),
}

impl Ingest {
    /// Spawns the loop; it returns once `cancel` fires and the message in hand
    /// is settled. Dropping the handle aborts it (as a crash would).
    pub(crate) fn spawn(
        self,
        consumer: PullConsumer,
        cancel: CancellationToken,
    ) -> AbortOnDropHandle<()> {
        AbortOnDropHandle::new(tokio::spawn(self.run(consumer, cancel)))
    }

    async fn run(self, consumer: PullConsumer, cancel: CancellationToken) {
        let mut consumer = Some(consumer);
        loop {
            let result = match consumer.take() {
                Some(consumer) => self.consume(consumer, &cancel).await,
                // The stream or the consumer may have been deleted: ensure both again.
                None => match ensure_domain_streams(&self.jetstream, &self.limits).await {
                    Ok(consumer) => self.consume(consumer, &cancel).await,
                    Err(err) => Err(err.into()),
                },
            };
            let Err(err) = result else { break };
            tracing::warn!(
                error = %err,
                retry_in_ms = RESTART_DELAY.as_millis(),
                "Consuming domain events failed; setting the consumer up again."
            );
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(RESTART_DELAY) => {}
            }
        }
        tracing::info!("Domain ingest stopped.");
    }

    /// Takes messages in stream order, up to `window` at once, until `cancel`
    /// fires (then `Ok`, with every message in hand settled) or the pull fails.
    ///
    /// Each message's notifications are sent as it is taken, before the next
    /// one's, so JetStream stores them in stream order; the acks are awaited
    /// in that order too, and each message is acked once its own are in.
    async fn consume(
        &self,
        consumer: PullConsumer,
        cancel: &CancellationToken,
    ) -> Result<(), ConsumeError> {
        let mut messages: Messages = consumer
            .stream()
            .group(DOMAIN_PRIORITY_GROUP)
            // Pulls renew the pin; each expires well inside the pin's timeout.
            .expires(self.limits.ack_wait / 4)
            .messages()
            .await?;
        tracing::debug!("Consuming domain events.");
        // A gap left by a replica that died with messages in hand fills when
        // JetStream hands them out again, an ack wait after it did; past
        // twice that, they are taken to be gone. Meanwhile the ack floor is
        // read every `FLOOR_RECHECK`: the gap may be acked elsewhere already.
        let gap_bound = self.limits.ack_wait * 2 + Duration::from_secs(1);
        let mut sequencer = Sequencer::new();
        let mut gap_deadline: Option<tokio::time::Instant> = None;
        let mut recheck_at: Option<tokio::time::Instant> = None;
        let mut in_hand = InFlight::new();
        let result = loop {
            let mut ready = Vec::new();
            tokio::select! {
                biased;
                () = cancel.cancelled() => break Ok(()),
                Some((message, handled)) = in_hand.next() => {
                    let failed = matches!(handled, Handled::StoreFailed(_));
                    self.settle(message, handled, cancel, OnFailure::RetryInPlace).await;
                    if failed {
                        // Retried before anything more is taken; then what is
                        // in hand is settled in order, retrying any other failure.
                        self.settle_all(&mut in_hand, cancel, OnFailure::RetryInPlace).await;
                    }
                    continue;
                }
                () = sleep_until_deadline(recheck_at) => {
                    recheck_at = None;
                    if let Some(floor) = ack_floor(&consumer).await {
                        ready = sequencer.floor(floor);
                    }
                    let gap_bound_passed =
                        gap_deadline.is_some_and(|deadline| deadline <= tokio::time::Instant::now());
                    if ready.is_empty() && gap_bound_passed {
                        tracing::warn!(
                            next_stream_seq = sequencer.waiting_since(),
                            "Older domain messages never came back; taking the newer ones."
                        );
                        ready = sequencer.skip_gap();
                    }
                }
                next = messages.next() => {
                    let message = match next {
                        Some(Ok(message)) => message,
                        Some(Err(err)) => break Err(err.into()),
                        None => break Err(ConsumeError::Ended),
                    };
                    match message.info().map(|info| info.stream_sequence) {
                        Ok(seq) => {
                            // Read the floor only when something seems to be
                            // missing, not while a known gap waits to fill.
                            if sequencer.would_wait(seq)
                                && gap_deadline.is_none()
                                && let Some(floor) = ack_floor(&consumer).await
                            {
                                ready = sequencer.floor(floor);
                            }
                            ready.extend(sequencer.offer(seq, message));
                        }
                        // `take` terminates it.
                        Err(_) => ready.push(message),
                    }
                }
            }
            for message in ready {
                if in_hand.stalled() {
                    // Settled first (a failure retried in place), so that
                    // this one cannot be stored before a store that was lost.
                    tracing::debug!(
                        "A store waits long for its ack; taking nothing more until it is settled."
                    );
                    self.settle_all(&mut in_hand, cancel, OnFailure::RetryInPlace)
                        .await;
                }
                in_hand.push(self.take(message).await);
            }
            gap_deadline = match (sequencer.waiting_since(), gap_deadline) {
                (None, _) => None,
                (Some(_), None) => Some(tokio::time::Instant::now() + gap_bound),
                (Some(_), Some(deadline)) => Some(deadline),
            };
            recheck_at = gap_deadline.map(|deadline| {
                recheck_at
                    .unwrap_or_else(|| deadline.min(tokio::time::Instant::now() + FLOOR_RECHECK))
            });
        };
        // Stop pulling before settling: settling lets JetStream hand out more,
        // which should go to a replica that stays rather than wait out the ack
        // wait in this one's buffer.
        drop(messages);
        self.settle_all(&mut in_hand, cancel, OnFailure::Redeliver)
            .await;
        result
    }

    /// Settles every message in hand, in order.
    async fn settle_all(
        &self,
        in_hand: &mut InFlight<'_>,
        cancel: &CancellationToken,
        on_failure: OnFailure,
    ) {
        while let Some((message, handled)) = in_hand.next().await {
            self.settle(message, handled, cancel, on_failure).await;
        }
    }

    /// The one way a message in hand is answered: as it was handled, or, for
    /// a failed store, after retrying it in place or as a redelivery.
    async fn settle(
        &self,
        message: Message,
        handled: Handled,
        cancel: &CancellationToken,
        on_failure: OnFailure,
    ) {
        match (handled, on_failure) {
            (Handled::Settle(settle), _) => settle_message(&message, settle).await,
            (Handled::StoreFailed(failure), OnFailure::RetryInPlace) => {
                self.retry_in_place(message, *failure, cancel).await;
            }
            (Handled::StoreFailed(_), OnFailure::Redeliver) => {
                settle_message(&message, Settle::Retry(Duration::ZERO)).await;
            }
        }
    }

    /// Validates `message` and sends its notifications (or, if invalid, its
    /// dead letter); the returned future finishes the work.
    async fn take(&self, message: Message) -> InHand<'_> {
        // One span per message, continuing the domain service's trace if the
        // message names one (its `traceparent` header).
        let span = tracing::info_span!(
            parent: None,
            "ingest_event",
            subject = %message.subject,
            "event.id" = tracing::field::Empty,
            "event.type" = tracing::field::Empty,
        );
        if let Some(headers) = &message.headers {
            trace_context::set_parent(&span, headers);
        }
        let mut outcome = self.metrics.event(Source::Nats);
        let delivery = match message.info() {
            Ok(info) => Delivery {
                subject: message.subject.to_string(),
                stream_seq: info.stream_sequence,
                deliveries: u64::try_from(info.delivered).unwrap_or(1).max(1),
                stored_at: info.published,
            },
            // A pull consumer only delivers JetStream messages; without the
            // metadata there is no seq to derive ids from. Terminate rather
            // than retry something that cannot change.
            Err(err) => {
                tracing::error!(error = %err, subject = %message.subject, "A domain message without JetStream metadata; dropping it.");
                return Box::pin(future::ready((message, Handled::Settle(Settle::Terminate))));
            }
        };
        self.metrics.observe_ingest_lag(delivery.stored_at);
        let parsing = Instant::now();
        let event = match validate(&delivery, &message.payload, self.max_event_stored_bytes) {
            Ok(event) => event,
            Err(Refused {
                body: refusal,
                claimed_type,
            }) => {
                outcome.claimed_type(claimed_type);
                return Box::pin(
                    async move {
                        let settle = self.dead_letter(&message, &delivery, refusal).await;
                        if settle != Settle::Terminate {
                            // Not even dead-lettered: it comes back.
                            outcome.failed();
                        }
                        (message, Handled::Settle(settle))
                    }
                    .instrument(span),
                );
            }
        };
        span.record("event.id", event.id.as_str());
        span.record("event.type", event.event_type.as_str());
        outcome.storing(event.event_type);
        let sent = send(&self.jetstream, &event).instrument(span.clone()).await;
        Box::pin(
            async move {
                let stored = match sent {
                    Ok(acks) => with_progress(&message, self.limits.ack_wait, acks).await,
                    Err(err) => Err(err),
                };
                match stored {
                    Ok(accepted) => {
                        outcome.stored(accepted.duplicate, parsing.elapsed());
                        tracing::debug!(
                            subject = %delivery.subject,
                            stream_seq = delivery.stream_seq,
                            deliveries = delivery.deliveries,
                            event.id = %event.id,
                            n_channels = accepted.published.len(),
                            duplicate = accepted.duplicate,
                            "Domain event stored."
                        );
                        (message, Handled::Settle(Settle::Ack))
                    }
                    Err(error) => {
                        let failure = Failure {
                            delivery,
                            event,
                            error,
                        };
                        (message, Handled::StoreFailed(Box::new(failure)))
                    }
                }
            }
            .instrument(span),
        )
    }

    /// Stores a message whose first attempt failed, retrying with a delay that
    /// doubles per attempt while nothing else is taken; after `max_attempts`
    /// it is dead-lettered. On shutdown it is left to a redelivery.
    async fn retry_in_place(&self, message: Message, failure: Failure, cancel: &CancellationToken) {
        let Failure {
            delivery,
            event,
            mut error,
        } = failure;
        // Earlier deliveries count as attempts: a message that keeps failing
        // on every replica is still dead-lettered in the end.
        let mut attempts = delivery.deliveries;
        loop {
            if attempts >= u64::from(self.limits.max_attempts) {
                let refusal = ErrorBody::new(
                    ErrorCode::NatsUnavailable,
                    format!("gave up after {attempts} attempts: {error}"),
                );
                let settle = self.dead_letter(&message, &delivery, refusal).await;
                settle_message(&message, settle).await;
                return;
            }
            let delay = retry_delay(attempts);
            tracing::warn!(
                error = %error,
                subject = %delivery.subject,
                stream_seq = delivery.stream_seq,
                attempts,
                retry_in_ms = delay.as_millis(),
                "Storing a domain event failed; retrying it before anything after it."
            );
            let waited = tokio::select! {
                () = cancel.cancelled() => false,
                () = with_progress(&message, self.limits.ack_wait, tokio::time::sleep(delay)) => true,
            };
            if !waited {
                settle_message(&message, Settle::Retry(Duration::ZERO)).await;
                return;
            }
            attempts += 1;
            let mut outcome = self.metrics.event(Source::Nats);
            outcome.storing(event.event_type);
            let started = Instant::now();
            let stored = with_progress(
                &message,
                self.limits.ack_wait,
                publish(&self.jetstream, &event, self.publish_window),
            )
            .await;
            match stored {
                Ok(accepted) => {
                    outcome.stored(accepted.duplicate, started.elapsed());
                    settle_message(&message, Settle::Ack).await;
                    return;
                }
                Err(err) => error = err,
            }
        }
    }

    /// Writes the dead letter of `message` and waits for JetStream to store it;
    /// if it cannot, the message is retried rather than lost.
    async fn dead_letter(
        &self,
        message: &Message,
        delivery: &Delivery,
        refusal: ErrorBody,
    ) -> Settle {
        let record = DeadLetter::new(
            refusal,
            delivery.subject.clone(),
            delivery.stream_seq,
            delivery.deliveries,
            &message.payload,
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            NATS_MESSAGE_ID,
            dead_letter_message_id(delivery.stream_seq, delivery.stored_at).as_str(),
        );
        let stored = async {
            let payload = serde_json::to_vec(&record)?;
            let ack = self
                .jetstream
                .publish_with_headers(
                    String::from(dead_letter_subject(&delivery.subject)),
                    headers,
                    payload.into(),
                )
                .await?
                .await?;
            Ok::<_, async_nats::Error>(ack)
        }
        .await;
        match stored {
            Ok(ack) => {
                self.metrics.dead_lettered(record.code);
                tracing::warn!(
                    subject = %delivery.subject,
                    stream_seq = delivery.stream_seq,
                    deliveries = delivery.deliveries,
                    code = %record.code,
                    reason = %record.message,
                    dead_letter_seq = ack.sequence,
                    duplicate = ack.duplicate,
                    "Domain message dead-lettered."
                );
                Settle::Terminate
            }
            Err(err) => {
                let delay = retry_delay(delivery.deliveries);
                tracing::warn!(
                    error = %err,
                    subject = %delivery.subject,
                    stream_seq = delivery.stream_seq,
                    code = %record.code,
                    retry_in_ms = delay.as_millis(),
                    "Dead-lettering a domain message failed; it will be retried."
                );
                Settle::Retry(delay)
            }
        }
    }
}

/// The valid event a domain message holds, or the reason it is refused.
fn validate(
    delivery: &Delivery,
    payload: &[u8],
    max_stored_bytes: u64,
) -> Result<ValidEvent, Refused> {
    // The domain stream refuses larger messages; this holds if an operator
    // raised its limit, and keeps dead letters well under the NATS max payload.
    if payload.len() > MAX_ENVELOPE_BYTES {
        return Err(Refused {
            body: ErrorBody::new(
                ErrorCode::PayloadTooLarge,
                format!("payload exceeds {MAX_ENVELOPE_BYTES} bytes"),
            ),
            claimed_type: None,
        });
    }
    let event = parse_event_with_defaults(
        payload,
        || EventId::for_domain_message(delivery.stream_seq, delivery.stored_at),
        || Timestamp(delivery.stored_at),
    )?;
    // Consumers of `domain.>` filter by subject; an event must be what its subject says.
    if event_type_from_domain_subject(&delivery.subject) != Some(event.event_type) {
        let error = FieldError {
            path: "type".into(),
            message: format!(
                "`{}` does not match the subject `{}`",
                event.event_type, delivery.subject
            ),
        };
        let body = ErrorBody {
            errors: vec![error.clone()],
            ..ErrorBody::new(
                ErrorCode::ValidationFailed,
                format!("{}: {}", error.path, error.message),
            )
        };
        return Err(Refused {
            body,
            claimed_type: Some(event.event_type),
        });
    }
    check_stored_bytes(&event, max_stored_bytes).map_err(|body| Refused {
        body,
        claimed_type: Some(event.event_type),
    })?;
    Ok(event)
}

/// The consumer's ack floor (every stream seq at or below it is acked), or
/// `None` if JetStream does not answer: the caller then waits on.
async fn ack_floor(consumer: &PullConsumer) -> Option<u64> {
    match consumer.get_info().await {
        Ok(info) => Some(info.ack_floor.stream_sequence),
        Err(err) => {
            tracing::debug!(error = %err, "Reading the domain consumer's ack floor failed.");
            None
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_deadline(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => future::pending().await,
    }
}

/// 100 ms after the first delivery, doubling per delivery, at most 5 s.
fn retry_delay(deliveries: u64) -> Duration {
    let doublings = u32::try_from(deliveries.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    FIRST_RETRY_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_DELAY)
}

/// Runs `work`, telling JetStream every half ack wait that `message` is still
/// in hand, so a slow store (a thousand-user audience on a busy server) is not
/// handed to another replica meanwhile.
async fn with_progress<T>(
    message: &Message,
    ack_wait: Duration,
    work: impl Future<Output = T>,
) -> T {
    let period = ack_wait / 2;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => {
                if let Err(err) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %err, "Reporting progress on a domain message failed.");
                }
            }
        }
    }
}

/// Answers JetStream. An ack does not wait for the server's confirmation (a
/// round trip per message would bound the whole ingest); if one is lost, the
/// message comes back after the ack wait and its redelivery stores nothing
/// new. A termination does wait: it is rare, and ends a dead letter's story.
async fn settle_message(message: &Message, settle: Settle) {
    let result = match settle {
        Settle::Ack => message.ack().await,
        Settle::Terminate => message.double_ack_with(AckKind::Term).await,
        Settle::Retry(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
    };
    if let Err(err) = result {
        tracing::warn!(
            error = %err,
            subject = %message.subject,
            settle = ?settle,
            "Settling a domain message failed; JetStream hands it out again after the ack wait."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_shared::events::EventType;

    fn delivery(subject: &str) -> Delivery {
        Delivery {
            subject: subject.into(),
            stream_seq: 12,
            deliveries: 1,
            stored_at: time::macros::datetime!(2026-11-26 10:00:00 UTC),
        }
    }

    fn envelope(event_type: &str) -> Vec<u8> {
        serde_json::json!({
            "type": event_type,
            "source": "calendar-service",
            "audience": { "users": ["u_1"] },
            "data": { "calendar_id": "cal_1", "event_id": "evt_9" }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn retry_delays_double_from_100_ms_up_to_5_s() {
        let delays: Vec<u128> = (1..=9).map(|n| retry_delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(retry_delay(0), FIRST_RETRY_DELAY);
        assert_eq!(retry_delay(u64::MAX), MAX_RETRY_DELAY);
    }

    #[test]
    fn an_event_without_id_or_time_gets_both_from_the_domain_message() {
        let delivery = delivery("domain.calendar.event.deleted");
        let event = validate(&delivery, &envelope("calendar.event.deleted"), u64::MAX).unwrap();
        assert_eq!(event.id.as_str(), "domain-12-1795687200000000000");
        assert_eq!(event.time, Timestamp(delivery.stored_at));
    }

    #[test]
    fn the_type_must_match_the_subject() {
        let refusal = validate(
            &delivery("domain.calendar.event.updated"),
            &envelope("calendar.event.deleted"),
            u64::MAX,
        )
        .unwrap_err();
        assert_eq!(refusal.body.code, ErrorCode::ValidationFailed);
        assert_eq!(refusal.body.errors.len(), 1);
        assert_eq!(refusal.body.errors[0].path, "type");
        assert_eq!(refusal.claimed_type, Some(EventType::CalendarEventDeleted));
    }

    #[test]
    fn oversized_payloads_are_refused_before_parsing() {
        let refusal = validate(
            &delivery("domain.calendar.event.deleted"),
            &vec![b' '; MAX_ENVELOPE_BYTES + 1],
            u64::MAX,
        )
        .unwrap_err();
        assert_eq!(refusal.body.code, ErrorCode::PayloadTooLarge);
    }
}
