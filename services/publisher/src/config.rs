//! Flags (each with an env var) and the validated configuration.

use std::{net::SocketAddr, time::Duration};

use herald_shared::{
    config::{ConfigError, HttpArgs, HttpLimits, JwtArgs, LogArgs, NatsArgs},
    envelope::MAX_ENVELOPE_BYTES,
    jwks::Keys,
    jwt::Expectations,
};

use crate::streams::{IngestLimits, StreamLimits};

/// herald-publisher: validates domain events and stores one notification per
/// recipient channel in NATS JetStream.
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct Args {
    /// Address to serve HTTP on.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Required `aud` claim of service tokens.
    #[arg(long, env = "HERALD_JWT_AUDIENCE", default_value = "herald-publisher")]
    pub jwt_audience: String,
    #[command(flatten)]
    pub http: HttpArgs,
    /// How long a repeated event `id` is recognized as a duplicate.
    #[arg(long, env = "HERALD_DEDUP_WINDOW_MS", default_value_t = 120_000)]
    pub dedup_window_ms: u64,
    /// How long notifications are kept (the replay horizon).
    #[arg(long, env = "HERALD_STREAM_MAX_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    pub stream_max_age_secs: u64,
    /// The most bytes the notification stream keeps; the oldest go first.
    #[arg(long, env = "HERALD_STREAM_MAX_BYTES", default_value_t = 1 << 30)]
    pub stream_max_bytes: i64,
    /// Replicas of every stream the publisher creates (and of its domain
    /// consumer): 1 on one nats-server, 3 on a cluster. Existing streams are
    /// moved to this count at start-up, keeping their epoch.
    #[arg(long, env = "HERALD_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// How many JetStream acks one request may wait for at once.
    #[arg(long, env = "HERALD_PUBLISH_WINDOW", default_value_t = 256)]
    pub publish_window: usize,
    /// How long a domain message taken from NATS may go unacknowledged before
    /// JetStream hands it to another replica; must be under the dedup window.
    #[arg(long, env = "HERALD_INGEST_ACK_WAIT_MS", default_value_t = 30_000)]
    pub ingest_ack_wait_ms: u64,
    /// Deliveries of a domain message that cannot be stored (NATS trouble)
    /// before it is dead-lettered with NATS_UNAVAILABLE.
    #[arg(long, env = "HERALD_INGEST_MAX_ATTEMPTS", default_value_t = 10)]
    pub ingest_max_attempts: u32,
    /// Domain messages in hand at once: their notifications are sent in
    /// stream order without waiting for each other's acks.
    #[arg(long, env = "HERALD_INGEST_WINDOW", default_value_t = 512)]
    pub ingest_window: u32,
    /// The most bytes one event may store: its notification's size times its
    /// recipient channels. Larger events are refused (`PAYLOAD_TOO_LARGE`).
    #[arg(long, env = "HERALD_MAX_EVENT_STORED_BYTES", default_value_t = PublishLimits::default().max_event_stored_bytes)]
    pub max_event_stored_bytes: u64,
    /// Events per second one service (token `sub`) may publish over HTTP,
    /// per publisher replica; 0 = no limit.
    #[arg(long, env = "HERALD_QUOTA_EVENTS_PER_SEC", default_value_t = PublishLimits::default().quota_events_per_sec)]
    pub quota_events_per_sec: u32,
    /// Stored bytes (as for `--max-event-stored-bytes`) per second one
    /// service may publish over HTTP, per publisher replica; 0 = no limit.
    #[arg(long, env = "HERALD_QUOTA_BYTES_PER_SEC", default_value_t = PublishLimits::default().quota_bytes_per_sec)]
    pub quota_bytes_per_sec: u64,
    /// The longest lifetime (`exp` − `iat`) of the user tokens the edges
    /// accept: a revocation is kept this long (plus a minute of clock skew),
    /// so a revoked token can never outlive it.
    #[arg(long, env = "HERALD_MAX_TOKEN_LIFETIME_SECS", default_value_t = 24 * 3600)]
    pub max_token_lifetime_secs: u64,
    /// Do not consume domain events from NATS (`domain.>`); HTTP ingest only.
    #[arg(long, env = "HERALD_NO_INGEST", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_ingest: bool,
    /// Most members `GET /v1/presence/{namespace}` lists (the rest: `truncated`).
    #[arg(long, env = "HERALD_PRESENCE_MAX_MEMBERS", default_value_t = 1000)]
    pub presence_max_members: usize,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The publisher's configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// One NATS URL or a comma-separated seed list.
    pub nats_url: String,
    /// Credential and TLS files for NATS.
    pub nats_auth: herald_shared::nats::NatsAuth,
    /// Swapped while running when `--jwks-url` is set.
    pub keys: Keys,
    /// What service tokens must carry.
    pub expect: Expectations,
    pub http: HttpLimits,
    pub stream: StreamLimits,
    /// Acks in flight per request; at least 1.
    pub publish_window: usize,
    /// What one event and one service may store.
    pub limits: PublishLimits,
    /// NATS ingest of domain events; `None` with `--no-ingest` (the domain
    /// streams and consumer are then left as they are).
    pub ingest: Option<IngestLimits>,
    /// How long a revocation is kept (`--max-token-lifetime-secs`).
    pub max_token_lifetime: Duration,
    /// `--dev`: answer CORS, so the edge's demo page (another origin) can publish.
    pub dev_mode: bool,
    /// Most members `GET /v1/presence/{namespace}` lists.
    pub presence_max_members: usize,
}

/// What one event and one service may store, so that no caller can push
/// everyone else's history out of the size-bounded stream at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishLimits {
    /// An event's notification size times its channels; at least
    /// [`MAX_ENVELOPE_BYTES`], at most the stream's `max_bytes`.
    pub max_event_stored_bytes: u64,
    /// Per token `sub`, over HTTP; 0 = no limit.
    pub quota_events_per_sec: u32,
    /// Stored bytes per token `sub`, over HTTP; 0 = no limit.
    pub quota_bytes_per_sec: u64,
}

impl Default for PublishLimits {
    /// 16 MiB per event (a 16 KiB notification to 1,000 users); per service
    /// 50,000 events/s (above what one replica stores) and 16 MiB/s.
    fn default() -> Self {
        Self {
            max_event_stored_bytes: 16 << 20,
            quota_events_per_sec: 50_000,
            quota_bytes_per_sec: 16 << 20,
        }
    }
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Self, ConfigError> {
        let loaded = args.jwt.load()?;
        if let Some(secret) = &loaded.generated_secret {
            tracing::warn!(
                secret = secret.expose(),
                "Development mode: generated an HS256 secret for service tokens."
            );
        }
        let dedup_window = Duration::from_millis(args.dedup_window_ms);
        if dedup_window < Duration::from_millis(100) {
            return Err(ConfigError::Invalid {
                flag: "--dedup-window-ms",
                reason: "must be at least 100".into(),
            });
        }
        let ingest_ack_wait = Duration::from_millis(args.ingest_ack_wait_ms);
        if ingest_ack_wait < Duration::from_millis(100) || ingest_ack_wait >= dedup_window {
            // A message redelivered after the dedup window would store its
            // notifications again.
            return Err(ConfigError::Invalid {
                flag: "--ingest-ack-wait-ms",
                reason: "must be at least 100 and less than --dedup-window-ms".into(),
            });
        }
        if args.ingest_max_attempts == 0 {
            return Err(ConfigError::Invalid {
                flag: "--ingest-max-attempts",
                reason: "must be at least 1".into(),
            });
        }
        if !(1..=5).contains(&args.stream_replicas) {
            // JetStream keeps at most 5 copies.
            return Err(ConfigError::Invalid {
                flag: "--stream-replicas",
                reason: "must be from 1 to 5".into(),
            });
        }
        let min_stored = MAX_ENVELOPE_BYTES as u64;
        let max_stored = u64::try_from(args.stream_max_bytes).unwrap_or(u64::MAX);
        if !(min_stored..=max_stored).contains(&args.max_event_stored_bytes) {
            // Below one full-size event to one channel, valid events could
            // never be stored; above the stream's size, one event could
            // discard the whole history.
            return Err(ConfigError::Invalid {
                flag: "--max-event-stored-bytes",
                reason: format!("must be at least {min_stored} and at most --stream-max-bytes"),
            });
        }
        if !(60..=366 * 24 * 3600).contains(&args.max_token_lifetime_secs) {
            return Err(ConfigError::Invalid {
                flag: "--max-token-lifetime-secs",
                reason: "must be between 60 and 31622400 (366 days)".into(),
            });
        }
        Ok(Self {
            listen: args.listen,
            nats_auth: args.nats.auth(),
            nats_url: args.nats.nats_url,
            keys: loaded.keys,
            expect: Expectations {
                audience: args.jwt_audience,
                issuer: args.jwt.jwt_issuer,
            },
            http: args.http.limits()?,
            stream: StreamLimits {
                max_age: Duration::from_secs(args.stream_max_age_secs),
                max_bytes: args.stream_max_bytes,
                dedup_window,
                replicas: args.stream_replicas,
            },
            publish_window: args.publish_window.max(1),
            limits: PublishLimits {
                max_event_stored_bytes: args.max_event_stored_bytes,
                quota_events_per_sec: args.quota_events_per_sec,
                quota_bytes_per_sec: args.quota_bytes_per_sec,
            },
            ingest: (!args.no_ingest).then_some(IngestLimits {
                ack_wait: ingest_ack_wait,
                max_attempts: args.ingest_max_attempts,
                window: args.ingest_window.clamp(1, 10_000),
                replicas: args.stream_replicas,
            }),
            max_token_lifetime: Duration::from_secs(args.max_token_lifetime_secs),
            dev_mode: args.jwt.dev,
            presence_max_members: args.presence_max_members,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn config(flags: &[&str]) -> Result<Config, ConfigError> {
        let args = ["herald-publisher", "--jwt-secret", "s3cret"]
            .iter()
            .chain(flags)
            .copied();
        Config::try_from(Args::try_parse_from(args).unwrap())
    }

    #[test]
    fn nats_ingest_is_on_by_default_and_can_be_switched_off() {
        let ingest = config(&[]).unwrap().ingest.unwrap();
        assert_eq!(ingest.ack_wait, Duration::from_secs(30));
        assert_eq!(ingest.max_attempts, 10);
        assert!(config(&["--no-ingest"]).unwrap().ingest.is_none());
    }

    #[test]
    fn streams_have_one_replica_unless_told() {
        let one = config(&[]).unwrap();
        assert_eq!((one.stream.replicas, one.ingest.unwrap().replicas), (1, 1));
        let three = config(&["--stream-replicas", "3"]).unwrap();
        assert_eq!(
            (three.stream.replicas, three.ingest.unwrap().replicas),
            (3, 3)
        );
        for bad in ["0", "6"] {
            let err = config(&["--stream-replicas", bad]).unwrap_err();
            assert!(err.to_string().contains("--stream-replicas"), "{err}");
        }
    }

    #[test]
    fn the_stored_bytes_bound_holds_one_full_event_and_fits_the_stream() {
        let limits = config(&[]).unwrap().limits;
        assert_eq!(limits, PublishLimits::default());
        assert_eq!(limits.max_event_stored_bytes, 16 << 20);
        for bad in ["65535", "1073741825"] {
            let err = config(&["--max-event-stored-bytes", bad]).unwrap_err();
            assert!(
                err.to_string().contains("--max-event-stored-bytes"),
                "{err}"
            );
        }
        let quota = config(&["--quota-events-per-sec", "0", "--quota-bytes-per-sec", "7"]);
        let limits = quota.unwrap().limits;
        assert_eq!(
            (limits.quota_events_per_sec, limits.quota_bytes_per_sec),
            (0, 7)
        );
    }

    #[test]
    fn revocations_are_kept_for_a_bounded_token_lifetime() {
        assert_eq!(
            config(&[]).unwrap().max_token_lifetime,
            Duration::from_secs(24 * 3600)
        );
        for bad in ["59", "31622401"] {
            let err = config(&["--max-token-lifetime-secs", bad]).unwrap_err();
            assert!(
                err.to_string().contains("--max-token-lifetime-secs"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_ack_wait_must_stay_under_the_dedup_window() {
        // Otherwise a redelivered message could be stored twice.
        let err = config(&["--ingest-ack-wait-ms", "120000"]).unwrap_err();
        assert!(err.to_string().contains("--ingest-ack-wait-ms"), "{err}");
        assert!(config(&["--ingest-max-attempts", "0"]).is_err());
    }
}
