//! Writing notifications straight into the stream, bypassing the publisher:
//! to make a live copy go missing on purpose, or to store thousands fast.

use async_nats::{HeaderMap, header::NATS_MESSAGE_ID, jetstream};
use herald_shared::{
    envelope::parse_event,
    stream::NOTIFY_STREAM,
    subject::{message_id, stored_subject},
};

use crate::nats::NatsServer;

/// Stores `body`'s notification for its first channel `n` times (ids
/// `<id>-0`, `<id>-1`, …) with acks pipelined; returns the seqs in order.
pub async fn store_many(nats: &NatsServer, body: &serde_json::Value, n: usize) -> Vec<u64> {
    let jetstream = jetstream::new(async_nats::connect(&nats.url).await.expect("connect"));
    let event = parse_event(body.to_string().as_bytes()).expect("a valid event");
    let subject = stored_subject(&event.channels[0]);
    let payload = bytes::Bytes::from(serde_json::to_vec(&event.notification()).unwrap());
    let mut seqs = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for i in chunk {
            let mut headers = HeaderMap::new();
            let id = format!("{}-{i}", event.id);
            headers.insert(NATS_MESSAGE_ID, message_id(&subject, &id).as_str());
            let ack = jetstream
                .publish_with_headers(String::from(subject.clone()), headers, payload.clone())
                .await
                .expect("publish");
            acks.push(ack);
        }
        for ack in acks {
            seqs.push(ack.await.expect("ack").sequence);
        }
    }
    seqs
}

/// Stores `body`'s notification for its first channel with RePublish
/// switched off, so no live copy is ever sent: an honest lost message.
pub async fn store_without_live_copy(nats: &NatsServer, body: &serde_json::Value) -> u64 {
    let jetstream = jetstream::new(async_nats::connect(&nats.url).await.expect("connect"));
    let mut stream = jetstream.get_stream(NOTIFY_STREAM).await.expect("stream");
    let mut config = stream.info().await.expect("info").config.clone();
    let republish = config.republish.take();
    jetstream
        .update_stream(&config)
        .await
        .expect("republish off");
    let seq = store_many(nats, body, 1).await[0];
    config.republish = republish;
    jetstream
        .update_stream(&config)
        .await
        .expect("republish on");
    seq
}
