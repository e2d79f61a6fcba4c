//! Flags (each with an env var) and the validated configuration.

use std::{net::SocketAddr, time::Duration};

pub use crate::origin::OriginPattern;
use herald_shared::{
    config::{ConfigError, HttpArgs, HttpLimits, JwtArgs, LogArgs, NatsArgs},
    jwks::Keys,
    jwt::Expectations,
    secret::Secret,
};

/// herald-edge: serves browser WebSockets and delivers the notifications of
/// their channels from NATS JetStream.
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct Args {
    /// Address to serve HTTP and WebSockets on.
    #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    /// Required `aud` claim of user tokens.
    #[arg(long, env = "HERALD_JWT_AUDIENCE", default_value = "herald")]
    pub jwt_audience: String,
    /// Most namespace grants (`ns` entries), and most method grants (`rpc`
    /// entries), a user token may carry; a token with more is refused as
    /// INVALID_TOKEN.
    #[arg(long, env = "HERALD_MAX_TOKEN_GRANTS", default_value_t = 256)]
    pub max_token_grants: usize,
    #[command(flatten)]
    pub http: HttpArgs,
    /// This node's name, sent in `welcome` [default: the host name].
    #[arg(long, env = "HERALD_NODE_ID")]
    pub node_id: Option<String>,
    /// WebSocket ping (and SSE comment) interval, in milliseconds; a peer
    /// silent for two intervals is dropped. Announced in `welcome`.
    #[arg(long, env = "HERALD_HEARTBEAT_MS", default_value_t = 25_000)]
    pub heartbeat_ms: u64,
    /// Most namespaces one socket may join.
    #[arg(long, env = "HERALD_MAX_NAMESPACES_PER_SOCKET", default_value_t = 100)]
    pub max_namespaces_per_socket: usize,
    /// Bytes of frames one socket may have queued before it is cut off (SLOW_CONSUMER).
    #[arg(long, env = "HERALD_OUTBOUND_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub outbound_queue_bytes: usize,
    /// Kernel send buffer per socket (SO_SNDBUF), in bytes; 0 leaves the kernel default.
    #[arg(long, env = "HERALD_SOCKET_SEND_BUFFER_BYTES", default_value_t = 64 * 1024)]
    pub socket_send_buffer_bytes: u32,
    /// Longest a write to a client may stay pending, in milliseconds: a
    /// socket that takes no bytes for that long is dropped (SLOW_CONSUMER),
    /// even if it keeps sending frames.
    #[arg(long, env = "HERALD_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,
    /// How long to wait for sockets to close on shutdown, in milliseconds.
    #[arg(long, env = "HERALD_DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// Period of the safety-net reconcile pass, in milliseconds (one `multi_last`
    /// per 1024 channels); passes also run after each join and NATS reconnect.
    #[arg(long, env = "HERALD_RECONCILE_INTERVAL_MS", default_value_t = 30_000)]
    pub reconcile_interval_ms: u64,
    /// Client frames one socket may send per second (token bucket refill).
    #[arg(long, env = "HERALD_CLIENT_FRAMES_PER_SEC", default_value_t = 20)]
    pub client_frames_per_sec: u32,
    /// Client frames one socket may send in a burst (token bucket size).
    #[arg(long, env = "HERALD_CLIENT_FRAME_BURST", default_value_t = 40)]
    pub client_frame_burst: u32,
    /// Refused frames in a row before the socket is closed with 4029.
    #[arg(long, env = "HERALD_RATE_LIMIT_VIOLATIONS", default_value_t = 10)]
    pub rate_limit_violations: u32,
    /// Most bytes one replay page reads from the stream (a batch direct get's
    /// `max_bytes`); a page holds at least one notification whatever its size.
    #[arg(long, env = "HERALD_REPLAY_PAGE_BYTES", default_value_t = 512 * 1024)]
    pub replay_page_bytes: usize,
    /// Reads of the stream in flight at once, node-wide (replay pages, gap
    /// repairs, reconcile passes); more queue in arrival order, a page per
    /// turn, so resuming sockets take turns. Times `--replay-page-bytes`,
    /// this bounds what the history connection can have in flight: keep it
    /// well under nats-server's `max_pending` (64 MiB by default).
    #[arg(long, env = "HERALD_REPLAY_CONCURRENCY", default_value_t = 8)]
    pub replay_concurrency: usize,
    /// Most sockets this edge holds; past it upgrades get HTTP 503 (0: no limit).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// Most WebSocket and SSE connections one user (token `sub`) may hold on
    /// this node; past it the new one gets TOO_MANY_CONNECTIONS and close
    /// 4005 (0: no cap).
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_USER", default_value_t = 0)]
    pub max_connections_per_user: usize,
    /// Longest the edge waits for a service to answer an `rpc` call, in
    /// milliseconds; then the caller gets RPC_TIMEOUT.
    #[arg(long, env = "HERALD_RPC_TIMEOUT_MS", default_value_t = 5_000)]
    pub rpc_timeout_ms: u64,
    /// Most `rpc` calls one socket may have waiting for their service; one
    /// more is refused with RATE_LIMITED.
    #[arg(long, env = "HERALD_MAX_RPC_IN_FLIGHT", default_value_t = 8)]
    pub max_rpc_in_flight: usize,
    /// Comma-separated origins allowed to open WebSockets and SSE streams
    /// (`https://app.example.com`, `https://*.example.com`); a request with
    /// another `Origin` gets HTTP 403 before the upgrade. Unset: any origin.
    #[arg(long, env = "HERALD_ALLOWED_ORIGINS")]
    pub allowed_origins: Option<String>,
    /// How long a user stays present after their edge stopped vouching for
    /// them, in milliseconds: the TTL of this edge's presence messages
    /// (whole seconds, rounded up; at least 1 s), rewritten every third of it.
    /// A killed edge's users leave within it (plus about a second).
    #[arg(long, env = "HERALD_PRESENCE_TTL_MS", default_value_t = 30_000)]
    pub presence_ttl_ms: u64,
    /// Most members a `presence` answer lists (the rest: `truncated`).
    #[arg(long, env = "HERALD_PRESENCE_MAX_MEMBERS", default_value_t = 1000)]
    pub presence_max_members: usize,
    /// With --dev: the publisher URL the demo page posts events to (`GET /dev/config`).
    #[arg(
        long,
        env = "HERALD_DEV_PUBLISHER_URL",
        default_value = "http://127.0.0.1:8090"
    )]
    pub dev_publisher_url: String,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The edge's configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// One NATS URL or a comma-separated seed list.
    pub nats_url: String,
    /// Credential and TLS files for NATS.
    pub nats_auth: herald_shared::nats::NatsAuth,
    /// Swapped while running when `--jwks-url` is set.
    pub keys: Keys,
    /// What user tokens must carry.
    pub expect: Expectations,
    /// Most `ns` grants, and most `rpc` grants, a user token may carry.
    pub max_token_grants: usize,
    pub http: HttpLimits,
    pub node_id: String,
    pub heartbeat: Duration,
    pub max_namespaces_per_socket: usize,
    pub outbound_queue_bytes: usize,
    /// `None` leaves the kernel's autotuning alone.
    pub socket_send_buffer_bytes: Option<u32>,
    /// Longest a write to a socket may stay pending before it is dropped.
    pub write_timeout: Duration,
    pub drain_timeout: Duration,
    pub reconcile_interval: Duration,
    pub client_frames_per_sec: u32,
    pub client_frame_burst: u32,
    pub rate_limit_violations: u32,
    /// `None`: no limit.
    pub max_connections: Option<usize>,
    /// Per user on this node; `None`: no cap.
    pub max_connections_per_user: Option<usize>,
    /// How long a call waits for its service (RPC_TIMEOUT after).
    pub rpc_timeout: Duration,
    /// Calls one socket may have pending (RATE_LIMITED past it).
    pub max_rpc_in_flight: usize,
    /// `None`: any origin.
    pub allowed_origins: Option<Vec<OriginPattern>>,
    /// Most bytes one replay page reads (at least one notification).
    pub replay_page_bytes: usize,
    /// Reads of the stream in flight at once, node-wide (at least 1).
    pub replay_concurrency: usize,
    /// `--dev`: also serve the demo page, `GET /dev/config` and, with a
    /// `dev_secret`, `GET /dev/token`, which mints tokens for anyone who asks.
    pub dev_mode: bool,
    /// In dev mode, the HS256 secret `/dev/token` signs with: `--jwt-secret`,
    /// or the one `--dev` generated. `None` outside dev mode.
    pub dev_secret: Option<Secret>,
    /// Where the demo page publishes (`GET /dev/config`).
    pub dev_publisher_url: String,
    /// The TTL of presence messages (whole seconds, at least 1).
    pub presence_ttl: Duration,
    /// Most members a `presence` answer lists.
    pub presence_max_members: usize,
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Self, ConfigError> {
        let loaded = args.jwt.load()?;
        if let Some(secret) = &loaded.generated_secret {
            tracing::warn!(
                secret = secret.expose(),
                "Development mode: generated an HS256 secret for user tokens."
            );
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
            max_token_grants: args.max_token_grants,
            http: args.http.limits()?,
            node_id: args.node_id.unwrap_or_else(host_name),
            heartbeat: Duration::from_millis(args.heartbeat_ms),
            max_namespaces_per_socket: args.max_namespaces_per_socket,
            outbound_queue_bytes: args.outbound_queue_bytes,
            socket_send_buffer_bytes: Some(args.socket_send_buffer_bytes).filter(|&b| b > 0),
            write_timeout: Duration::from_millis(args.write_timeout_ms.max(1)),
            drain_timeout: Duration::from_millis(args.drain_timeout_ms),
            reconcile_interval: Duration::from_millis(args.reconcile_interval_ms.max(100)),
            client_frames_per_sec: args.client_frames_per_sec,
            client_frame_burst: args.client_frame_burst,
            rate_limit_violations: args.rate_limit_violations,
            max_connections: Some(args.max_connections).filter(|&n| n > 0),
            max_connections_per_user: Some(args.max_connections_per_user).filter(|&n| n > 0),
            rpc_timeout: Duration::from_millis(args.rpc_timeout_ms.max(1)),
            max_rpc_in_flight: args.max_rpc_in_flight.max(1),
            allowed_origins: args
                .allowed_origins
                .as_deref()
                .map(parse_origins)
                .transpose()?,
            replay_page_bytes: args.replay_page_bytes.max(1),
            replay_concurrency: args.replay_concurrency.max(1),
            dev_mode: args.jwt.dev,
            dev_secret: args
                .jwt
                .dev
                .then(|| args.jwt.jwt_secret.or(loaded.generated_secret))
                .flatten(),
            dev_publisher_url: args.dev_publisher_url,
            presence_ttl: Duration::from_secs(args.presence_ttl_ms.div_ceil(1000).max(1)),
            presence_max_members: args.presence_max_members,
        })
    }
}

fn parse_origins(list: &str) -> Result<Vec<OriginPattern>, ConfigError> {
    let origins = list
        .split(',')
        .filter(|o| !o.trim().is_empty())
        .map(str::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| ConfigError::Invalid {
            flag: "--allowed-origins",
            reason,
        })?;
    if origins.is_empty() {
        return Err(ConfigError::Invalid {
            flag: "--allowed-origins",
            reason: "names no origin (unset it to allow any)".into(),
        });
    }
    Ok(origins)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "edge".into())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn config(flags: &[&str]) -> Config {
        let args = std::iter::once("herald-edge").chain(flags.iter().copied());
        Config::try_from(Args::try_parse_from(args).unwrap()).unwrap()
    }

    #[test]
    fn dev_mode_signs_dev_tokens_with_the_configured_or_generated_secret() {
        let configured = config(&["--dev", "--jwt-secret", "s3cret"]);
        assert!(configured.dev_mode);
        assert_eq!(configured.dev_secret.unwrap().expose(), "s3cret");
        let generated = config(&["--dev"]);
        assert!(generated.dev_secret.is_some_and(|s| !s.expose().is_empty()));

        let production = config(&["--jwt-secret", "s3cret"]);
        assert!(!production.dev_mode);
        assert!(production.dev_secret.is_none());
        assert_eq!(production.dev_publisher_url, "http://127.0.0.1:8090");
    }
}
