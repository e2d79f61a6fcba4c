//! Flags (each with an env var) and the validated configuration.

use std::{net::SocketAddr, time::Duration};

use herald_shared::{
    config::{ConfigError, HttpArgs, HttpLimits, JwtArgs, LogArgs, NatsArgs},
    jwt::{Expectations, KeySet},
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
    /// Do not consume domain events from NATS (`domain.>`); HTTP ingest only.
    #[arg(long, env = "HERALD_NO_INGEST", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_ingest: bool,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The publisher's configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub nats_url: String,
    pub keys: KeySet,
    /// What service tokens must carry.
    pub expect: Expectations,
    pub http: HttpLimits,
    pub stream: StreamLimits,
    /// Acks in flight per request; at least 1.
    pub publish_window: usize,
    /// NATS ingest of domain events; `None` with `--no-ingest` (the domain
    /// streams and consumer are then left as they are).
    pub ingest: Option<IngestLimits>,
    /// `--dev`: answer CORS, so the edge's demo page (another origin) can publish.
    pub dev_mode: bool,
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
        Ok(Self {
            listen: args.listen,
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
            },
            publish_window: args.publish_window.max(1),
            ingest: (!args.no_ingest).then_some(IngestLimits {
                ack_wait: ingest_ack_wait,
                max_attempts: args.ingest_max_attempts,
                window: args.ingest_window.clamp(1, 10_000),
            }),
            dev_mode: args.jwt.dev,
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
    fn the_ack_wait_must_stay_under_the_dedup_window() {
        // Otherwise a redelivered message could be stored twice.
        let err = config(&["--ingest-ack-wait-ms", "120000"]).unwrap_err();
        assert!(err.to_string().contains("--ingest-ack-wait-ms"), "{err}");
        assert!(config(&["--ingest-max-attempts", "0"]).is_err());
    }
}
