//! Names and metadata of Herald's JetStream streams.
//!
//! The publisher creates and updates the streams (`herald_publisher::streams`);
//! the edge only reads them, and writes to the presence stream alone. Both agree on the names and on where the stream
//! epoch is kept, which is why those live here.

/// The notification stream: one message per (event, recipient channel). The event log.
pub const NOTIFY_STREAM: &str = "HERALD_NOTIFY";
/// The stream domain services publish domain events to.
pub const DOMAIN_STREAM: &str = "HERALD_DOMAIN";
/// Rejected domain messages, with their error code and the original payload.
pub const DEAD_LETTER_STREAM: &str = "HERALD_DEAD_LETTER";
/// Presence: each edge's members per namespace, the last message per
/// subject only, each with its own TTL (`shared::presence`).
pub const PRESENCE_STREAM: &str = "HERALD_PRESENCE";
/// The durable consumer all publisher replicas share on the domain stream.
pub const DOMAIN_CONSUMER: &str = "herald-publisher";

/// The stream metadata key that holds the notification stream's epoch.
///
/// The epoch is set once, when the stream is created, and kept on every
/// update; a recreated stream gets a new one. A client cursor (`seq`) is only
/// meaningful together with the epoch it was read under.
pub const EPOCH_METADATA_KEY: &str = "herald.epoch";
