//! The live connection's task: dial a server (TLS when asked for, the
//! node's credentials), resubscribe everything, then read messages into
//! their subscriptions' queues and write what the client asks, until the
//! connection is lost; then dial again, for ever, until the client is dropped.

use std::{
    collections::VecDeque,
    path::Path,
    sync::{Arc, OnceLock, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use async_nats::ServerAddr;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::BytesMut;
use herald_shared::nats::{NatsAuth, Seeds, UrlCredentials, parse_seeds};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::{Notify, mpsc, oneshot},
};

use super::{
    Command, Message, Shared,
    proto::{self, Info, ServerOp},
};

/// How long one dial may take: TCP, TLS, `INFO`, `CONNECT` and its `PONG`.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the client pings an otherwise quiet server.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// Pings unanswered before the connection counts as dead.
const MAX_PINGS_OUT: u32 = 2;
/// How long a write to the server may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between rounds of reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Dialing one server failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum DialError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] proto::ProtoError),
    #[error("the server refused the connection: {0}")]
    Refused(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("no answer within {DIAL_TIMEOUT:?}")]
    TimedOut,
    #[error("{MAX_PINGS_OUT} pings unanswered")]
    Stale,
    #[error("a write took over {WRITE_TIMEOUT:?}")]
    WriteTimedOut,
}

/// How to dial: fixed at start.
struct Options {
    /// The `CONNECT` fields besides the signature.
    name: String,
    credentials: Option<UrlCredentials>,
    /// A user JWT (from `--nats-creds`) and the nkey pair that signs nonces.
    jwt: Option<String>,
    key_pair: Option<nkeys::KeyPair>,
    require_tls: bool,
    auth: NatsAuth,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

/// A dialed connection.
struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
}

/// The servers to dial: the seeds in order, then those the cluster announced.
struct Servers {
    list: Vec<ServerAddr>,
    /// The index of the server connected to (or last tried).
    current: usize,
}

/// Starts the connection: dials the seeds in order until one accepts, then
/// runs the task.
pub(super) async fn start(
    urls: &str,
    auth: &NatsAuth,
    name: &str,
    on_connect: Option<Arc<Notify>>,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
) -> anyhow::Result<()> {
    let Seeds {
        servers,
        credentials,
    } = parse_seeds(urls)?;
    let options = Arc::new(Options::new(name, credentials, auth)?);
    let mut servers = Servers {
        list: servers,
        current: 0,
    };
    let mut last_error = None;
    for index in 0..servers.list.len() {
        servers.current = index;
        match dial(&options, &mut servers).await {
            Ok(conn) => {
                // Connected now, not only once the task has run: nothing to resubscribe yet.
                shared.connected.store(true, Ordering::Release);
                tokio::spawn(run(conn, options, servers, shared, commands, on_connect));
                return Ok(());
            }
            Err(err) => last_error = Some(err),
        }
    }
    let err = last_error.expect("at least one seed");
    Err(anyhow::Error::new(err)).with_context(|| {
        format!(
            "connecting the live path to NATS at {}",
            herald_shared::secret::redact_url(urls)
        )
    })
}

/// Why serving a connection ended.
enum Ended {
    /// The client was dropped: close for good.
    ClientGone,
    Lost(DialError),
}

async fn run(
    mut conn: Conn,
    options: Arc<Options>,
    mut servers: Servers,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    on_connect: Option<Arc<Notify>>,
) {
    // Flushes not yet answered (`None`: a keepalive ping), carried across reconnects.
    let mut pongs = VecDeque::new();
    let mut connection_number = 1;
    loop {
        let ended = serve(
            &mut conn,
            connection_number,
            &shared,
            &mut commands,
            &mut pongs,
            &mut servers,
            on_connect.as_deref(),
        )
        .await;
        shared.connected.store(false, Ordering::Release);
        match ended {
            Ended::ClientGone => break,
            Ended::Lost(err) => {
                tracing::warn!(error = %err, "Live NATS connection lost; reconnecting.")
            }
        }
        // Keepalive pings died with the connection; flushes are asked again.
        pongs.retain(Option::is_some);
        let Some(next) = reconnect(&options, &mut servers, &commands).await else {
            break;
        };
        conn = next;
        connection_number += 1;
    }
    shared.close_all();
}

/// Dials the servers in turn, pausing between rounds, until one accepts;
/// `None` once the client is gone.
async fn reconnect(
    options: &Options,
    servers: &mut Servers,
    commands: &mpsc::UnboundedReceiver<Command>,
) -> Option<Conn> {
    let mut attempt = 0u32;
    loop {
        if commands.is_closed() {
            return None;
        }
        servers.current = (servers.current + 1) % servers.list.len();
        match dial(options, servers).await {
            Ok(conn) => return Some(conn),
            Err(err) => {
                let server = servers.list[servers.current].as_url_str();
                tracing::debug!(%server, error = %err, "Live NATS reconnect failed.");
            }
        }
        attempt += 1;
        if attempt.is_multiple_of(servers.list.len() as u32) {
            let round = attempt / servers.list.len() as u32;
            let delay =
                (Duration::from_millis(50) * 2u32.pow(round.min(5))).min(MAX_RECONNECT_DELAY);
            tokio::time::sleep(delay + jitter(delay / 4)).await;
        }
    }
}

/// Up to `max`, so that many edges reconnecting at once spread out.
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    max.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

/// Serves one connection: resubscribes, then reads and writes until it is lost.
#[allow(clippy::too_many_arguments)]
async fn serve(
    conn: &mut Conn,
    connection_number: u64,
    shared: &Shared,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    pongs: &mut VecDeque<Option<oneshot::Sender<()>>>,
    servers: &mut Servers,
    on_connect: Option<&Notify>,
) -> Ended {
    let mut out = BytesMut::new();
    {
        let mut subscriptions = shared.subscriptions.lock().expect("live lock");
        for (sid, registered) in &mut subscriptions.by_sid {
            proto::sub(&mut out, &registered.subject, *sid);
            registered.sent_on = connection_number;
        }
    }
    // After the SUBs: each flush asked before is answered by a new PONG.
    for _ in 0..pongs.len() {
        out.extend_from_slice(proto::PING);
    }
    if let Err(err) = write(conn, &mut out).await {
        return Ended::Lost(err);
    }
    shared.connected.store(true, Ordering::Release);
    tracing::info!(
        server = servers.list[servers.current].as_url_str(),
        "Live NATS connected."
    );
    if let Some(on_connect) = on_connect {
        on_connect.notify_one();
    }

    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut pings_out = 0u32;
    loop {
        tokio::select! {
            read = conn.io.read_buf(&mut conn.buf) => {
                match read {
                    Ok(0) => return Ended::Lost(DialError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                    Ok(_) => {}
                    Err(err) => return Ended::Lost(err.into()),
                }
                loop {
                    let op = match proto::parse(&mut conn.buf) {
                        Ok(Some(op)) => op,
                        Ok(None) => break,
                        Err(err) => return Ended::Lost(err.into()),
                    };
                    match op {
                        ServerOp::Msg(msg) => shared.dispatch(msg.sid, Message {
                            headers: msg.headers,
                            payload: msg.payload,
                        }),
                        ServerOp::Ping => out.extend_from_slice(proto::PONG),
                        ServerOp::Pong => {
                            pings_out = 0;
                            if let Some(Some(flushed)) = pongs.pop_front() {
                                let _ = flushed.send(());
                            }
                        }
                        // A permission the user lacks: the server drops the
                        // subscription and says so only here.
                        ServerOp::Err(text) => tracing::warn!(error = %text, "NATS server error on the live connection."),
                        ServerOp::Info(info) => servers.discovered(&info),
                        ServerOp::Ok => {}
                    }
                }
                if conn.buf.capacity() - conn.buf.len() < 4096 {
                    conn.buf.reserve(64 * 1024);
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { return Ended::ClientGone };
                apply(command, connection_number, shared, &mut out, pongs);
                while let Ok(command) = commands.try_recv() {
                    apply(command, connection_number, shared, &mut out, pongs);
                }
            }
            _ = keepalive.tick() => {
                if pings_out >= MAX_PINGS_OUT {
                    return Ended::Lost(DialError::Stale);
                }
                pings_out += 1;
                out.extend_from_slice(proto::PING);
                pongs.push_back(None);
            }
        }
        if !out.is_empty()
            && let Err(err) = write(conn, &mut out).await
        {
            return Ended::Lost(err);
        }
    }
}

fn apply(
    command: Command,
    connection_number: u64,
    shared: &Shared,
    out: &mut BytesMut,
    pongs: &mut VecDeque<Option<oneshot::Sender<()>>>,
) {
    match command {
        Command::Subscribe(sid) => {
            let mut subscriptions = shared.subscriptions.lock().expect("live lock");
            // Gone already, or resubscribed by a reconnect: nothing to write.
            if let Some(registered) = subscriptions.by_sid.get_mut(&sid)
                && registered.sent_on != connection_number
            {
                proto::sub(out, &registered.subject, sid);
                registered.sent_on = connection_number;
            }
        }
        Command::Unsubscribe(sid) => proto::unsub(out, sid),
        Command::Flush(flushed) => {
            out.extend_from_slice(proto::PING);
            pongs.push_back(Some(flushed));
        }
    }
}

async fn write(conn: &mut Conn, out: &mut BytesMut) -> Result<(), DialError> {
    let writing = async {
        conn.io.write_all(out).await?;
        conn.io.flush().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, writing)
        .await
        .map_err(|_| DialError::WriteTimedOut)??;
    out.clear();
    Ok(())
}

// === impl Servers ===

impl Servers {
    /// Adds the servers an `INFO` announces that are not known yet.
    fn discovered(&mut self, info: &Info) {
        if info.ldm {
            tracing::info!(
                "NATS server in lame duck mode: it will close the live connection soon."
            );
        }
        for url in &info.connect_urls {
            let Ok(addr) = url.parse::<ServerAddr>() else {
                continue;
            };
            if !self
                .list
                .iter()
                .any(|known| known.host() == addr.host() && known.port() == addr.port())
            {
                self.list.push(addr);
            }
        }
    }
}

// === impl Options ===

impl Options {
    fn new(
        name: &str,
        credentials: Option<UrlCredentials>,
        auth: &NatsAuth,
    ) -> anyhow::Result<Self> {
        if (auth.creds.is_some() || auth.nkey.is_some()) && credentials.is_some() {
            anyhow::bail!("credentials in --nats-url and --nats-creds or --nats-nkey: give one");
        }
        let (mut jwt, mut key_pair) = (None, None);
        if let Some(path) = &auth.creds {
            let contents = std::fs::read_to_string(path)
                .with_context(|| format!("reading --nats-creds {}", path.display()))?;
            let (user_jwt, seed) = parse_creds(&contents).with_context(|| {
                format!("--nats-creds {}: no user JWT and seed", path.display())
            })?;
            jwt = Some(user_jwt.to_owned());
            key_pair = Some(
                nkeys::KeyPair::from_seed(seed)
                    .with_context(|| format!("--nats-creds {}", path.display()))?,
            );
        }
        if let Some(path) = &auth.nkey {
            let seed = std::fs::read_to_string(path)
                .with_context(|| format!("reading --nats-nkey {}", path.display()))?;
            key_pair = Some(
                nkeys::KeyPair::from_seed(seed.trim())
                    .with_context(|| format!("--nats-nkey {}", path.display()))?,
            );
        }
        Ok(Self {
            name: name.to_owned(),
            credentials,
            jwt,
            key_pair,
            require_tls: auth.wants_tls(),
            auth: auth.clone(),
            tls: OnceLock::new(),
        })
    }

    /// The `CONNECT` line, signing the server's nonce when an nkey is set.
    fn connect_line(&self, info: &Info) -> Result<Vec<u8>, DialError> {
        let mut fields = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "lang": "rust",
            "version": env!("CARGO_PKG_VERSION"),
            "name": self.name,
            "protocol": 1,
            "headers": true,
            "no_responders": false,
            "echo": true,
            "tls_required": self.require_tls,
        });
        match &self.credentials {
            Some(UrlCredentials::UserPassword(user, password)) => {
                fields["user"] = user.as_str().into();
                fields["pass"] = password.as_str().into();
            }
            Some(UrlCredentials::Token(token)) => fields["auth_token"] = token.as_str().into(),
            None => {}
        }
        if let Some(key_pair) = &self.key_pair {
            let nonce = info.nonce.as_deref().unwrap_or_default();
            let signature = key_pair
                .sign(nonce.as_bytes())
                .map_err(|err| DialError::Refused(format!("signing the nonce: {err}")))?;
            fields["sig"] = URL_SAFE_NO_PAD.encode(signature).into();
            match &self.jwt {
                Some(jwt) => fields["jwt"] = jwt.as_str().into(),
                None => fields["nkey"] = key_pair.public_key().into(),
            }
        }
        let mut line = b"CONNECT ".to_vec();
        serde_json::to_writer(&mut line, &fields).expect("JSON to a Vec");
        line.extend_from_slice(b"\r\n");
        Ok(line)
    }

    /// The TLS client configuration, built on first use: the CA file's
    /// roots (else the system's), and the client certificate if given.
    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, DialError> {
        if let Some(config) = self.tls.get() {
            return Ok(config.clone());
        }
        let config = Arc::new(
            self.build_tls()
                .map_err(|err| DialError::Tls(format!("{err:#}")))?,
        );
        Ok(self.tls.get_or_init(|| config).clone())
    }

    fn build_tls(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.auth.tls_ca {
            Some(path) => {
                for cert in certs(path)? {
                    roots.add(cert).context("adding a CA certificate")?;
                }
            }
            None => {
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        Ok(match (&self.auth.tls_cert, &self.auth.tls_key) {
            (Some(cert), Some(key)) => builder.with_client_auth_cert(
                certs(cert)?,
                PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("reading {}", key.display()))?,
            )?,
            _ => builder.with_no_client_auth(),
        })
    }
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .with_context(|| format!("reading certificates from {}", path.display()))
}

/// The user JWT and nkey seed of a `.creds` file: the first line inside
/// each `-----BEGIN …-----` / `------END …------` pair.
fn parse_creds(contents: &str) -> Option<(&str, &str)> {
    let mut blocks = contents
        .lines()
        .map(str::trim)
        .skip_while(|line| !line.starts_with("---"))
        .collect::<Vec<_>>()
        .into_iter();
    let mut inside = Vec::new();
    while let Some(line) = blocks.next() {
        if line.starts_with("---") && line.contains("BEGIN") {
            let value = blocks.next()?;
            inside.push(value);
        }
    }
    match inside[..] {
        [jwt, seed, ..] => Some((jwt, seed)),
        _ => None,
    }
}

/// Dials `servers.current`: TCP, `INFO`, TLS if anyone asks for it,
/// `CONNECT` and a `PING` whose `PONG` says the server accepted.
async fn dial(options: &Options, servers: &mut Servers) -> Result<Conn, DialError> {
    let server = servers.list[servers.current].clone();
    let dialing = async {
        let tcp = TcpStream::connect((server.host(), server.port())).await?;
        tcp.set_nodelay(true)?;
        let mut conn = Conn {
            io: Box::new(tcp),
            buf: BytesMut::with_capacity(64 * 1024),
        };
        let ServerOp::Info(info) = read_op(&mut conn).await? else {
            return Err(DialError::Refused(
                "the server did not start with INFO".into(),
            ));
        };
        if options.require_tls || server.tls_required() || info.tls_required {
            let name = ServerName::try_from(server.host().to_owned())
                .map_err(|err| DialError::Tls(err.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(options.tls()?);
            // Nothing else was sent before the handshake: the buffer is empty.
            let plain = conn.io;
            let tls = connector.connect(name, plain).await?;
            conn.io = Box::new(tls);
        }
        let mut hello = options.connect_line(&info)?;
        hello.extend_from_slice(proto::PING);
        conn.io.write_all(&hello).await?;
        conn.io.flush().await?;
        loop {
            match read_op(&mut conn).await? {
                ServerOp::Pong => break,
                ServerOp::Err(text) => return Err(DialError::Refused(text)),
                ServerOp::Ping => conn.io.write_all(proto::PONG).await?,
                ServerOp::Info(_) | ServerOp::Ok | ServerOp::Msg(_) => {}
            }
        }
        Ok((conn, info))
    };
    let (conn, info) = tokio::time::timeout(DIAL_TIMEOUT, dialing)
        .await
        .map_err(|_| DialError::TimedOut)??;
    servers.discovered(&info);
    Ok(conn)
}

async fn read_op(conn: &mut Conn) -> Result<ServerOp, DialError> {
    loop {
        if let Some(op) = proto::parse(&mut conn.buf)? {
            return Ok(op);
        }
        if conn.io.read_buf(&mut conn.buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_creds_file() {
        let creds = "-----BEGIN NATS USER JWT-----\neyJ0eXAi.abc.def\n------END NATS USER JWT------\n\n\
            ************************* IMPORTANT *************************\n\
            NKEY Seed printed below can be used to sign and prove identity.\n\n\
            -----BEGIN USER NKEY SEED-----\nSUAIO3FHUX\n------END USER NKEY SEED------\n";
        assert_eq!(parse_creds(creds), Some(("eyJ0eXAi.abc.def", "SUAIO3FHUX")));
        assert_eq!(parse_creds("nothing here"), None);
    }
}
