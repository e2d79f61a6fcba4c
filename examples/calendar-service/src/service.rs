//! The NATS side: one queue subscription per calendar method, a task per
//! request (at most `--calendar-max-in-flight` at once), and the reply.
//!
//! Plain queue subscriptions rather than async-nats's `service` feature (the
//! NATS "micro" protocol): the edge needs nothing but request and reply, and
//! the micro protocol's discovery and stats endpoints (`$SRV.>`) would need
//! one more NATS permission and more code for this example to carry.

use std::{future::Future, sync::Arc};

use async_nats::{Message, Subscriber};
use futures_util::{StreamExt as _, stream::select_all};
use herald_shared::{
    ids::UserId,
    rpc::{RpcMethod, RpcReply, RpcRequest, headers},
    subject::{method_from_rpc_subject, rpc_subject},
    trace_context,
};
use tokio::{sync::Semaphore, task::JoinSet};
use tracing::Instrument as _;

use crate::{
    calendar::{CalendarId, Change, NewEvent, Patch},
    config::Config,
    error::ServiceError,
    handle::Handler,
};

/// The methods this service answers: every registered `calendar.*` one.
fn methods() -> impl Iterator<Item = RpcMethod> {
    RpcMethod::ALL
        .iter()
        .copied()
        .filter(|m| m.as_str().starts_with("calendar."))
}

/// One queue subscription per method, flushed: in place once this returns.
pub(crate) async fn subscribe(
    nats: &async_nats::Client,
    config: &Config,
) -> anyhow::Result<Vec<Subscriber>> {
    let mut subscribers = Vec::new();
    for method in methods() {
        let subject = String::from(rpc_subject(method));
        subscribers.push(
            nats.queue_subscribe(subject, config.queue_group.clone())
                .await?,
        );
    }
    nats.flush().await?;
    Ok(subscribers)
}

/// Answers requests until `shutdown` completes; then stops taking new ones
/// (the subscriptions drain: what NATS already sent here is still
/// answered) and waits for those in hand. `on_answer` runs after each reply.
pub(crate) async fn serve(
    nats: &async_nats::Client,
    config: &Config,
    mut subscribers: Vec<Subscriber>,
    handler: Handler,
    on_answer: impl Fn() + Clone + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(queue_group = %config.queue_group, "Calendar service answering.");
    let limit = Arc::new(Semaphore::new(config.max_in_flight));
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    {
        let mut requests = select_all(subscribers.iter_mut());
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                message = requests.next() => {
                    let Some(message) = message else { break };
                    let permit = limit.clone().acquire_owned().await?;
                    let (nats, handler, on_answer) = (nats.clone(), handler.clone(), on_answer.clone());
                    tasks.spawn(async move {
                        answer(&nats, &handler, message).await;
                        on_answer();
                        drop(permit);
                    });
                }
            }
        }
    }
    tracing::info!("Calendar service draining.");
    for subscriber in &mut subscribers {
        subscriber.drain().await?;
    }
    // What NATS sent before the unsubscribes arrived.
    let mut rest = select_all(subscribers.iter_mut());
    while let Some(message) = rest.next().await {
        answer(nats, &handler, message).await;
        on_answer();
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Answers one request, if it has a reply subject.
async fn answer(nats: &async_nats::Client, handler: &Handler, message: Message) {
    let Some(reply_to) = message.reply.clone() else {
        return;
    };
    let method = method_from_rpc_subject(&message.subject);
    // A child of the edge's `rpc` span (its `traceparent`); the domain event
    // it publishes carries this span on, to the publisher and the deliveries.
    let span = tracing::info_span!(
        "call",
        method = method.map_or("unknown", RpcMethod::as_str),
        code = tracing::field::Empty,
    );
    if let Some(headers) = &message.headers {
        trace_context::set_parent(&span, headers);
    }
    let reply = async {
        let outcome = match method {
            Some(method) => call(handler, method, &message).await,
            None => Err(ServiceError::NotFound("no such method".into())),
        };
        let reply = reply_for(outcome);
        if let RpcReply::Error(err) = &reply {
            tracing::Span::current().record("code", err.code.as_str());
            tracing::debug!(code = err.code.as_str(), "Call refused.");
        }
        reply
    }
    .instrument(span)
    .await;
    if let Err(err) = nats.publish(reply_to, reply.to_body().into()).await {
        tracing::warn!(error = %err, "Reply not sent.");
    }
}

fn reply_for(outcome: Result<serde_json::Value, ServiceError>) -> RpcReply {
    match outcome {
        Ok(result) => RpcReply::Result(result),
        Err(err) => {
            let mut reply =
                RpcReply::error(err.code(), err.to_string()).expect("service codes are valid");
            if let RpcReply::Error(body) = &mut reply {
                body.errors = err.errors().to_vec();
            }
            reply
        }
    }
}

/// Who calls, what they ask, and the answer.
async fn call(
    handler: &Handler,
    method: RpcMethod,
    message: &Message,
) -> Result<serde_json::Value, ServiceError> {
    // Set by the edge from the token's `sub`; only edges may publish here.
    let user = message
        .headers
        .as_ref()
        .and_then(|h| h.get(headers::USER))
        .and_then(|value| UserId::parse(value.as_str()).ok())
        .ok_or(ServiceError::NoUser)?;
    // Validated by the edge; checked again, as nothing on the network is trusted.
    let request = method
        .parse_body(&message.payload)
        .map_err(ServiceError::Validation)?;
    match request {
        RpcRequest::CalendarEventList(list) => {
            let calendar = calendar_id(&list.calendar_id)?;
            handler.list(&user, &calendar, list.from, list.to).await
        }
        RpcRequest::CalendarEventCreate(create) => {
            let calendar = calendar_id(&create.calendar_id)?;
            let change = Change::Create(NewEvent {
                title: create.title,
                starts_at: create.starts_at,
                ends_at: create.ends_at,
                all_day: create.all_day,
                location: create.location,
                attendees: create.attendees,
            });
            handler.change(&user, &calendar, change).await
        }
        RpcRequest::CalendarEventUpdate(update) => {
            let calendar = calendar_id(&update.calendar_id)?;
            let change = Change::Update {
                event_id: update.event_id,
                patch: Patch {
                    title: update.title,
                    starts_at: update.starts_at,
                    ends_at: update.ends_at,
                    all_day: update.all_day,
                    location: update.location,
                    attendees: update.attendees,
                },
            };
            handler.change(&user, &calendar, change).await
        }
        RpcRequest::CalendarEventDelete(delete) => {
            let calendar = calendar_id(&delete.calendar_id)?;
            let change = Change::Delete {
                event_id: delete.event_id,
            };
            handler.change(&user, &calendar, change).await
        }
        RpcRequest::CalendarEventRsvp(rsvp) => {
            let calendar = calendar_id(&rsvp.calendar_id)?;
            let change = Change::Rsvp {
                event_id: rsvp.event_id,
                response: rsvp.response,
            };
            handler.change(&user, &calendar, change).await
        }
    }
}

fn calendar_id(id: &str) -> Result<CalendarId, ServiceError> {
    CalendarId::parse(id).map_err(|message| ServiceError::validation("data.calendar_id", message))
}
