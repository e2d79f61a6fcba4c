//! `nats-ingest`: 50,000 domain events published to JetStream on
//! `domain.calendar.event.updated` (acks awaited in a window, as a domain service should),
//! consumed by the publisher through its durable consumer: how long until all are processed
//! (the consumer has nothing pending or unacked, and the notification stream holds one
//! notification per event), as events a second. No edges.

use std::{collections::VecDeque, time::Duration};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, context::PublishAckFuture};

use super::{Ctx, diagnostics};
use crate::{cli::Scenario, clock, publish, report::Report, usage::Probe};

const EVENTS: u64 = 50_000;
const QUICK_EVENTS: u64 = 10_000;
/// The subject the publisher ingests this event type from (`shared::subject::domain_subject`).
const SUBJECT: &str = "domain.calendar.event.updated";
/// Stream and consumer names from `shared::stream`.
const DOMAIN_STREAM: &str = "HERALD_DOMAIN";
const DOMAIN_CONSUMER: &str = "herald-publisher";
const NOTIFY_STREAM: &str = "HERALD_NOTIFY";
const DEAD_LETTER_STREAM: &str = "HERALD_DEAD_LETTER";
/// JetStream acks awaited at once while publishing.
const ACK_WINDOW: usize = 256;
const USERS: u64 = 1_000;
const POLL: Duration = Duration::from_millis(50);
const INGEST_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let mut stack = ctx.start_stack(Scenario::NatsIngest, false).await?;
    let result = async {
        let n_events = if ctx.quick() { QUICK_EVENTS } else { EVENTS };
        let client = async_nats::connect(&stack.nats_url)
            .await
            .context("connecting to NATS")?;
        let js = jetstream::new(client);
        wait_for_consumer(&js).await?;
        let audience = publish::to_one_user(USERS);

        let probe = Probe::new(stack.server_pids());
        let start = probe.sample();
        let started = std::time::Instant::now();
        let mut acks: VecDeque<PublishAckFuture> = VecDeque::with_capacity(ACK_WINDOW);
        for k in 0..n_events {
            if acks.len() >= ACK_WINDOW
                && let Some(ack) = acks.pop_front()
            {
                ack.await.context("a domain publish was not acked")?;
            }
            let id = clock::event_id(clock::now_ns(), k);
            let body = publish::envelope(&id, &audience(k));
            acks.push_back(js.publish(SUBJECT, body.into()).await.context("publishing")?);
        }
        for ack in acks {
            ack.await.context("a domain publish was not acked")?;
        }
        let published_s = started.elapsed().as_secs_f64();

        let stored = loop {
            let domain = js.get_stream(DOMAIN_STREAM).await.context("domain stream")?;
            let consumer = domain
                .consumer_info(DOMAIN_CONSUMER)
                .await
                .context("consumer info")?;
            let pending = consumer.num_pending + consumer.num_ack_pending as u64;
            let stored = stream_messages(&js, NOTIFY_STREAM).await?;
            if pending == 0 && stored >= n_events {
                break stored;
            }
            if started.elapsed() > INGEST_TIMEOUT {
                bail!("after {INGEST_TIMEOUT:?}, {pending} domain events still pending, {stored} stored");
            }
            tokio::time::sleep(POLL).await;
        };
        let ingest_s = started.elapsed().as_secs_f64();
        let usage = probe.between(&start, &probe.sample());
        let dead_letters = stream_messages(&js, DEAD_LETTER_STREAM).await?;

        report.events_published = n_events;
        report.cpu(&usage);
        report.extra("ingest_events_per_sec", n_events as f64 / ingest_s);
        report.extra("ingest_seconds", ingest_s);
        report.extra("domain_publish_per_sec", n_events as f64 / published_s);
        report.extra("notifications_stored", stored);
        report.extra("dead_letters", dead_letters);
        report.extra("server_cpu_us_per_event", usage.server_cpu_s * 1e6 / n_events as f64);
        anyhow::Ok(())
    }
    .await;
    diagnostics::add(&mut stack, None, report).await;
    result
}

/// The publisher creates the domain stream and its consumer after it reports ready.
async fn wait_for_consumer(js: &jetstream::Context) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = js.get_stream(DOMAIN_STREAM).await
            && stream.consumer_info(DOMAIN_CONSUMER).await.is_ok()
        {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the publisher created no {DOMAIN_CONSUMER} consumer on {DOMAIN_STREAM}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> anyhow::Result<u64> {
    let mut stream = js
        .get_stream(name)
        .await
        .with_context(|| format!("stream {name}"))?;
    let info = stream
        .info()
        .await
        .with_context(|| format!("stream {name} info"))?;
    Ok(info.state.messages)
}
