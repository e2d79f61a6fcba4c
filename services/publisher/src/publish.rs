//! Storing a valid event: one JetStream message per recipient channel.

use async_nats::{
    HeaderMap,
    header::NATS_MESSAGE_ID,
    jetstream::{self, context::PublishAckFuture},
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use herald_shared::{
    api::{PublishAccepted, PublishedChannel},
    envelope::ValidEvent,
    subject::{message_id, stored_subject},
    trace_context,
};

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
    // The same bytes for every channel: serialize once.
    let payload = Bytes::from(
        serde_json::to_vec(&event.notification()).map_err(|err| PublishError(err.into()))?,
    );
    // Likewise the trace context: written once, copied into each message.
    let mut trace_headers = HeaderMap::new();
    trace_context::inject(&mut trace_headers);
    let acks: Vec<_> = stream::iter(event.channels.iter().cloned())
        .map(|channel| {
            let subject = stored_subject(&channel);
            let mut headers = trace_headers.clone();
            headers.insert(
                NATS_MESSAGE_ID,
                message_id(&subject, event.id.as_str()).as_str(),
            );
            let payload = payload.clone();
            async move {
                let ack: PublishAckFuture = jetstream
                    .publish_with_headers(String::from(subject), headers, payload)
                    .await
                    .map_err(|err| PublishError(err.into()))?;
                let ack = ack.await.map_err(|err| PublishError(err.into()))?;
                Ok::<_, PublishError>((
                    PublishedChannel {
                        channel,
                        seq: ack.sequence,
                    },
                    ack.duplicate,
                ))
            }
        })
        .buffered(window)
        .try_collect()
        .await?;

    let duplicate = acks.iter().all(|(_, duplicate)| *duplicate);
    Ok(PublishAccepted {
        id: event.id.clone(),
        duplicate,
        published: acks.into_iter().map(|(published, _)| published).collect(),
    })
}
