//! HTTP bodies other than the envelope and the error body.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{channel::Channel, ids::EventId};

/// The `202 Accepted` body of `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublishAccepted {
    pub id: EventId,
    /// True when every channel's notification had been stored before under
    /// this id (within the dedup window); nothing new was stored then.
    pub duplicate: bool,
    /// One entry per recipient channel, in audience order.
    pub published: Vec<PublishedChannel>,
}

/// Where one recipient channel's notification was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublishedChannel {
    pub channel: Channel,
    /// The notification's sequence in the stream: the client's resume cursor.
    pub seq: u64,
}
