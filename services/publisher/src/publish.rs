//! Storing a valid event: one JetStream message per recipient channel, and
//! the bound on how many bytes that may be.

use async_nats::{
    HeaderMap,
    header::NATS_MESSAGE_ID,
    jetstream::{self, context::PublishAckFuture},
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, future, stream, stream::FuturesOrdered};
use herald_shared::{
    api::{PublishAccepted, PublishedChannel},
    channel::Channel,
    envelope::ValidEvent,
    error_code::{ErrorBody, ErrorCode},
    ids::EventId,
    subject::{message_id, stored_subject},
    trace_context,
};

/// The bytes `event` stores: its notification once per channel.
///
/// JetStream adds each message's subject, headers (`Nats-Msg-Id`,
/// `traceparent`) and framing on top, some 100–250 bytes; the README's
/// sizing rule counts them.
pub(crate) fn stored_bytes(event: &ValidEvent) -> u64 {
    /// Counts what is written to it, and keeps nothing.
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serializing a validated event cannot fail; were it to, `messages` says so.
    let _ = serde_json::to_writer(&mut counter, &event.notification());
    counter.0.saturating_mul(event.channels.len() as u64)
}

/// Refuses an event that would store more than `max_bytes`
/// (`PAYLOAD_TOO_LARGE`), before anything of it is stored; else its stored bytes.
///
/// # Errors
/// The refusal, naming the event's size and the bound.
pub(crate) fn check_stored_bytes(event: &ValidEvent, max_bytes: u64) -> Result<u64, ErrorBody> {
    let bytes = stored_bytes(event);
    if bytes > max_bytes {
        return Err(ErrorBody::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "the event would store {bytes} bytes ({} channels × its notification), \
                 over the bound of {max_bytes}; send fewer recipients or a smaller event",
                event.channels.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Storing failed: JetStream did not take or did not acknowledge a message.
#[derive(Debug, thiserror::Error)]
#[error("storing the notification failed: {0}")]
pub(crate) struct PublishError(#[source] async_nats::Error);

/// Stores one notification per channel of `event`, with at most `window`
/// acks outstanding, and reports each channel's seq.
///
/// Each message carries `Nats-Msg-Id: <subject>|<event id>`, so a retry of
/// the same event within the dedup window stores nothing and is answered
/// with the original seqs. Each also carries the current span's
/// `traceparent` (and `tracestate`), so its delivery joins the same trace.
pub(crate) async fn publish(
    jetstream: &jetstream::Context,
    event: &ValidEvent,
    window: usize,
) -> Result<PublishAccepted, PublishError> {
    let messages = messages(event)?;
    let acks: Vec<_> = stream::iter(messages)
        .map(|message| async move { message.send(jetstream).await?.await })
        .buffered(window)
        .try_collect()
        .await?;
    Ok(accepted(event.id.clone(), acks))
}

/// Sends one notification per channel of `event`, in channel order, without
/// waiting for JetStream's acks: what the caller sends after this returns is
/// stored after these. The returned future waits for the acks.
pub(crate) async fn send(
    jetstream: &jetstream::Context,
    event: &ValidEvent,
) -> Result<impl Future<Output = Result<PublishAccepted, PublishError>> + use<>, PublishError> {
    let mut acks = Vec::with_capacity(event.channels.len());
    for message in messages(event)? {
        acks.push(message.send(jetstream).await?);
    }
    let id = event.id.clone();
    Ok(async move {
        let acks = future::try_join_all(acks).await?;
        Ok(accepted(id, acks))
    })
}

/// Stores every event of `events`, in order, as one pipeline: the messages of
/// all of them are sent without waiting for acks, at most `window` acks
/// outstanding at any time (the oldest is awaited before another goes out),
/// so a batch costs about one round trip rather than one per event. Each
/// event's result is its own: a failed store fails that event only.
///
/// Sending in order on one connection means JetStream stores the events in
/// the order given, and a repeated id later in `events` is a duplicate of the
/// earlier one.
pub(crate) async fn publish_all(
    jetstream: &jetstream::Context,
    events: &[&ValidEvent],
    window: usize,
) -> Vec<Result<PublishAccepted, PublishError>> {
    let window = window.max(1);
    let mut stored: Vec<Stored> = events
        .iter()
        .map(|event| Ok(Vec::with_capacity(event.channels.len())))
        .collect();
    let mut in_flight = FuturesOrdered::new();
    for (i, event) in events.iter().enumerate() {
        let messages = match messages(event) {
            Ok(messages) => messages,
            Err(err) => {
                stored[i] = Err(err);
                continue;
            }
        };
        for message in messages {
            while in_flight.len() >= window {
                let Some(done) = in_flight.next().await else {
                    break;
                };
                record(&mut stored, done);
            }
            match message.send(jetstream).await {
                Ok(ack) => in_flight.push_back(async move { (i, ack.await) }),
                Err(err) => {
                    // The rest of this event is not sent: it fails as a whole
                    // and is retried as a whole, with the same id.
                    stored[i] = Err(err);
                    break;
                }
            }
        }
    }
    while let Some(done) = in_flight.next().await {
        record(&mut stored, done);
    }
    events
        .iter()
        .zip(stored)
        .map(|(event, acks)| acks.map(|acks| accepted(event.id.clone(), acks)))
        .collect()
}

/// Per event of a batch: its channels' acks so far, in channel order, or its
/// first failure.
type Stored = Result<Vec<(PublishedChannel, bool)>, PublishError>;

/// Adds the ack of one message of event `i` to what it has stored.
fn record(
    stored: &mut [Stored],
    (i, ack): (usize, Result<(PublishedChannel, bool), PublishError>),
) {
    match (&mut stored[i], ack) {
        (Ok(acks), Ok(ack)) => acks.push(ack),
        (Ok(_), Err(err)) => stored[i] = Err(err),
        (Err(_), _) => {}
    }
}

/// One notification to store: its channel, subject, headers and payload.
struct Outgoing {
    channel: Channel,
    subject: String,
    headers: HeaderMap,
    payload: Bytes,
}

impl Outgoing {
    /// Hands the message to the connection; the returned future waits for its ack.
    async fn send(
        self,
        jetstream: &jetstream::Context,
    ) -> Result<
        impl Future<Output = Result<(PublishedChannel, bool), PublishError>> + use<>,
        PublishError,
    > {
        let ack: PublishAckFuture = jetstream
            .publish_with_headers(self.subject, self.headers, self.payload)
            .await
            .map_err(|err| PublishError(err.into()))?;
        let channel = self.channel;
        Ok(async move {
            let ack = ack.await.map_err(|err| PublishError(err.into()))?;
            Ok((
                PublishedChannel {
                    channel,
                    seq: ack.sequence,
                },
                ack.duplicate,
            ))
        })
    }
}

/// The messages that store `event`: the same payload and trace context for
/// every channel, serialized once.
fn messages(event: &ValidEvent) -> Result<Vec<Outgoing>, PublishError> {
    let payload = Bytes::from(
        serde_json::to_vec(&event.notification()).map_err(|err| PublishError(err.into()))?,
    );
    let mut trace_headers = HeaderMap::new();
    trace_context::inject(&mut trace_headers);
    Ok(event
        .channels
        .iter()
        .map(|channel| {
            let subject = stored_subject(channel);
            let mut headers = trace_headers.clone();
            headers.insert(
                NATS_MESSAGE_ID,
                message_id(&subject, event.id.as_str()).as_str(),
            );
            Outgoing {
                channel: channel.clone(),
                subject: String::from(subject),
                headers,
                payload: payload.clone(),
            }
        })
        .collect())
}

/// The answer for the event `id` from its channels' acks: a duplicate only if
/// every channel's notification was one.
fn accepted(id: EventId, acks: Vec<(PublishedChannel, bool)>) -> PublishAccepted {
    let duplicate = acks.iter().all(|(_, duplicate)| *duplicate);
    PublishAccepted {
        id,
        duplicate,
        published: acks.into_iter().map(|(published, _)| published).collect(),
    }
}
