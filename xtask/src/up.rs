//! `cargo xtask up`: builds and runs NATS, the publisher, two edges and the example calendar
//! service locally until Ctrl-C.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{nats_server, signals::StopSignal, util};

const NATS_PORT: u16 = 4222;
const NATS_MONITOR_PORT: u16 = 8222;
const PUBLISHER_PORT: u16 = 8090;
const EDGES: [(&str, u16); 2] = [("edge-a", 8080), ("edge-b", 8081)];

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const READY_POLL: Duration = Duration::from_millis(100);
const WATCH_POLL: Duration = Duration::from_millis(200);
/// How long a child gets to shut down cleanly after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Where a local stack listens: NATS (and its monitoring port), the
/// publisher, and the two edges by name.
#[derive(Debug)]
pub(crate) struct Ports {
    pub(crate) nats: u16,
    pub(crate) monitor: u16,
    pub(crate) publisher: u16,
    pub(crate) edges: [(&'static str, u16); 2],
}

/// Starts nats-server (JetStream on `store`), the publisher and the two edges
/// in dev mode (CORS on the publisher; the demo and its dev tokens on the
/// edges), each ready before the next starts. `children` stops them when dropped.
pub(crate) fn start_stack(
    children: &mut Children,
    nats: &Path,
    store: &Path,
    server_name: &str,
    ports: &Ports,
    secret: &str,
) -> Result<(), String> {
    let bin = util::target_dir().join("debug");
    let nats_url = format!("nats://127.0.0.1:{}", ports.nats);
    let publisher_url = format!("http://127.0.0.1:{}", ports.publisher);

    let mut nats_cmd = Command::new(nats);
    nats_cmd
        .args(["-js", "-a", "127.0.0.1", "-n", server_name])
        .args(["-p", &ports.nats.to_string()])
        .args(["-m", &ports.monitor.to_string()])
        .arg("--store_dir")
        .arg(store);
    children.spawn("nats", nats_cmd)?;
    // The publisher creates the stream at startup, so JetStream must be up first.
    children.wait_ready("nats", ports.monitor, "/healthz?js-enabled-only=true")?;

    let mut publisher = Command::new(bin.join("herald-publisher"));
    publisher
        .env("HERALD_LISTEN", format!("127.0.0.1:{}", ports.publisher))
        .env("HERALD_NATS_URL", &nats_url)
        .env("HERALD_JWT_SECRET", secret)
        .env("HERALD_DEV", "1");
    children.spawn("publisher", publisher)?;
    children.wait_ready("publisher", ports.publisher, "/readyz")?;

    for (name, port) in ports.edges {
        let mut edge = Command::new(bin.join("herald-edge"));
        edge.env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_NODE_ID", name)
            .env("HERALD_NATS_URL", &nats_url)
            .env("HERALD_JWT_SECRET", secret)
            .env("HERALD_DEV", "1")
            .env("HERALD_DEV_PUBLISHER_URL", &publisher_url);
        children.spawn(name, edge)?;
    }
    // The example domain service behind the demo's `rpc` calls; in demo mode
    // any user joins the calendar they call (examples/calendar-service).
    let mut calendar = Command::new(bin.join("calendar-service"));
    calendar
        .env("HERALD_NATS_URL", &nats_url)
        .env("HERALD_CALENDAR_AUTO_JOIN", "1");
    children.spawn("calendar-service", calendar)?;
    for (name, port) in ports.edges {
        children.wait_ready(name, port, "/readyz")?;
    }
    // It serves no HTTP: it is ready once NATS shows its subscriptions.
    children.wait_subscribed("calendar-service", ports.monitor, CALENDAR_READY_SUBJECT)?;
    Ok(())
}

/// The last subject the calendar service subscribes to before it answers.
const CALENDAR_READY_SUBJECT: &str = "rpc.calendar.event.list";

/// What `up` was asked for on its command line.
#[derive(Debug, Default)]
struct Options {
    /// Ports the OS calls free instead of the fixed ones, and a store and logs
    /// of this run's own, so a second stack can run beside the usual one.
    free_ports: bool,
    /// Run the binaries already built.
    no_build: bool,
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let mut options = Options::default();
    for arg in args {
        match arg.as_str() {
            "--free-ports" => options.free_ports = true,
            "--no-build" => options.no_build = true,
            other => {
                return Err(format!(
                    "unknown option `{other}` for `up`; see `cargo xtask help`"
                ));
            }
        }
    }
    // First: a signal from here on stops the children instead of orphaning them.
    let stop = StopSignal::install()?;
    let herald = util::herald_dir();
    let nats = nats_server::ensure()?;
    let secret = dev_secret(&herald)?;
    let (ports, scratch) = if options.free_ports {
        let [nats, monitor, publisher, edge_a, edge_b] = util::free_ports()?;
        let ports = Ports {
            nats,
            monitor,
            publisher,
            edges: [(EDGES[0].0, edge_a), (EDGES[1].0, edge_b)],
        };
        (ports, herald.join(format!("up-{}", std::process::id())))
    } else {
        let ports = Ports {
            nats: NATS_PORT,
            monitor: NATS_MONITOR_PORT,
            publisher: PUBLISHER_PORT,
            edges: EDGES,
        };
        // Checked before the build so a leftover `up` in another terminal fails in a second,
        // not after a minute of compiling.
        check_ports_free(&ports)?;
        (ports, herald.clone())
    };
    if !options.no_build {
        build()?;
    }
    if stop.received() {
        return Ok(());
    }

    let bin = util::target_dir().join("debug");
    let logs = scratch.join("logs");
    util::create_dir_all(&logs)?;
    let mut children = Children::new(logs);
    let result = start_stack(
        &mut children,
        &nats.path,
        &scratch.join("nats-store"),
        "herald-dev",
        &ports,
        &secret,
    )
    .and_then(|()| {
        println!("{}", quick_tour(&secret, &bin, &ports));
        // Flushed now: a supervisor or test reading stdout through a pipe waits for this line.
        let _ = std::io::stdout().flush();
        children.watch(&stop)
    });
    // Stops the services (newest first) however we got here: a signal, a child that died, or
    // a failure while starting.
    drop(children);
    if options.free_ports {
        // Best effort: this run's store and logs are scratch; a leftover only costs disk.
        let _ = fs::remove_dir_all(&scratch);
    }
    result
}

/// Reads the dev JWT secret, creating it on first use so tokens minted in one session keep
/// working in the next.
fn dev_secret(herald: &Path) -> Result<String, String> {
    let path = herald.join("dev-secret");
    match fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_owned()),
        Ok(_) => {
            return Err(format!(
                "{} is empty; delete it to get a new one",
                path.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    }

    let secret = random_secret()?;
    util::create_dir_all(herald)?;
    // Written whole under a name of our own, then linked into place: two `up`s starting
    // at once (a second one with --free-ports) both end up with the one that won.
    let scratch = herald.join(format!("dev-secret.{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600) // it signs tokens, even if only dev ones
        .open(&scratch)
        .and_then(|mut file| writeln!(file, "{secret}"));
    let linked = written.and_then(|()| fs::hard_link(&scratch, &path));
    let _ = fs::remove_file(&scratch);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return dev_secret(herald),
        Err(e) => return Err(format!("cannot write {}: {e}", path.display())),
    }
    eprintln!("xtask: created dev JWT secret in {}", path.display());
    Ok(secret)
}

/// 32 random bytes as hex: an HS256 secret.
pub(crate) fn random_secret() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(bytes.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    }))
}

fn check_ports_free(ports: &Ports) -> Result<(), String> {
    let [edge_a, edge_b] = ports.edges;
    let ports = [
        ("nats", ports.nats),
        ("nats monitoring", ports.monitor),
        ("publisher", ports.publisher),
        edge_a,
        edge_b,
    ];
    for (name, port) in ports {
        // The listener is dropped right away; this only asks "could the child bind here?".
        if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
            return Err(format!(
                "port {port} (for {name}) is not available: {e}. Is another `cargo xtask up` \
                 running? See who holds it with `ss -ltnp 'sport = :{port}'`, or run this one \
                 with --free-ports"
            ));
        }
    }
    Ok(())
}

pub(crate) fn build() -> Result<(), String> {
    eprintln!("xtask: building herald-edge, herald-publisher, herald and calendar-service");
    let mut cargo = util::cargo();
    cargo.arg("build");
    for package in [
        "herald-edge",
        "herald-publisher",
        "herald-tests",
        "calendar-service",
    ] {
        cargo.args(["-p", package]);
    }
    for bin in [
        "herald-edge",
        "herald-publisher",
        "herald",
        "calendar-service",
    ] {
        cargo.args(["--bin", bin]);
    }
    let status = util::run(&mut cargo)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build failed ({status})"))
    }
}

fn quick_tour(secret: &str, bin: &Path, ports: &Ports) -> String {
    // Relative paths read better and paste fine from the repo root; fall back to absolute
    // when CARGO_TARGET_DIR points elsewhere.
    let herald = bin.join("herald");
    let herald = herald
        .strip_prefix(util::repo_root())
        .unwrap_or(&herald)
        .display();
    let (a, b) = (ports.edges[0].1, ports.edges[1].1);
    let (nats, monitor, publisher) = (ports.nats, ports.monitor, ports.publisher);
    format!(
        "\
Herald is up: publisher http://127.0.0.1:{publisher}, edges ws://127.0.0.1:{a} and \
ws://127.0.0.1:{b}, NATS nats://127.0.0.1:{nats} (monitoring \
http://127.0.0.1:{monitor}). Logs in .herald/logs/.
Live calendar demo: open http://127.0.0.1:{a}/demo (and http://127.0.0.1:{b}/demo in a \
second window); its changes go through `rpc` to the example calendar-service.
In another terminal, from {root}:
  export HERALD_JWT_SECRET={secret}
  TOKEN=$({herald} token alice@example.com --ns 'team-*')
  {herald} listen --url ws://127.0.0.1:{a}/v1/ws --token \"$TOKEN\" --ns team-42
And in a third:
  {herald} publish --url http://127.0.0.1:{publisher} --user alice@example.com --ns team-42
Or with any WebSocket client: ws://127.0.0.1:{a}/v1/ws?token=$TOKEN
Press Ctrl-C (or send SIGTERM) to stop.",
        root = util::repo_root().display(),
    )
}

/// One running service and where its output goes.
#[derive(Debug)]
struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// The services started so far. Dropping it stops them all, newest first, so a failure or
/// panic anywhere in `run` never leaves orphans holding the ports.
#[derive(Debug)]
pub(crate) struct Children {
    log_dir: PathBuf,
    running: Vec<Service>,
}

impl Children {
    pub(crate) fn new(log_dir: PathBuf) -> Self {
        Self {
            log_dir,
            running: Vec::new(),
        }
    }

    /// Starts `cmd` with stdout and stderr going to `<log_dir>/<name>.log`, truncated so each
    /// `up` starts with a fresh log.
    pub(crate) fn spawn(&mut self, name: &'static str, mut cmd: Command) -> Result<(), String> {
        let log = self.log_dir.join(format!("{name}.log"));
        let file =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let file_too = file
            .try_clone()
            .map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
        let child = cmd
            .current_dir(util::repo_root())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file_too)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        // Track it before printing (which panics if stderr is gone), so `Drop` still stops it.
        let pid = child.id();
        let shown = format!("xtask: started {name} (pid {pid}), log {}", log.display());
        self.running.push(Service { name, child, log });
        eprintln!("{shown}");
        Ok(())
    }

    /// Polls the service's HTTP endpoint until it answers 200, failing fast if it exits.
    pub(crate) fn wait_ready(&mut self, name: &str, port: u16, path: &str) -> Result<(), String> {
        let service = self
            .running
            .iter_mut()
            .find(|s| s.name == name)
            .expect("wait_ready is called after spawn");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if util::http_status(port, path) == Some(200) {
                return Ok(());
            }
            if let Ok(Some(status)) = service.child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}) before becoming ready; see {}",
                    service.log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} did not answer 200 on http://127.0.0.1:{port}{path} within {} s; \
                     see {}",
                    READY_TIMEOUT.as_secs(),
                    service.log.display()
                ));
            }
            sleep(READY_POLL);
        }
    }

    /// Polls NATS's monitoring port until some connection subscribes to `subject`, failing
    /// fast if the service exits.
    pub(crate) fn wait_subscribed(
        &mut self,
        name: &str,
        monitor: u16,
        subject: &str,
    ) -> Result<(), String> {
        let service = self
            .running
            .iter_mut()
            .find(|s| s.name == name)
            .expect("wait_subscribed is called after spawn");
        let deadline = Instant::now() + READY_TIMEOUT;
        let quoted = format!("\"{subject}\"");
        loop {
            if util::http_body(monitor, "/connz?subs=1&limit=1024")
                .is_some_and(|body| body.contains(&quoted))
            {
                return Ok(());
            }
            if let Ok(Some(status)) = service.child.try_wait() {
                return Err(format!(
                    "{name} exited ({status}) before subscribing; see {}",
                    service.log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} did not subscribe to {subject} within {} s; see {}",
                    READY_TIMEOUT.as_secs(),
                    service.log.display()
                ));
            }
            sleep(READY_POLL);
        }
    }

    /// The process id of a running service, for tests that kill it on purpose.
    pub(crate) fn pid(&self, name: &str) -> Option<u32> {
        self.running
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.child.id())
    }

    /// Blocks until a stop signal arrives (`Ok`) or some service exits on its own (`Err`,
    /// saying which one). The signal is looked at first: on Ctrl-C the terminal signals the
    /// children too, and their exit is then expected.
    fn watch(&mut self, stop: &StopSignal) -> Result<(), String> {
        loop {
            if stop.received() {
                let _ = writeln!(std::io::stderr(), "xtask: signal received; stopping");
                return Ok(());
            }
            for service in &mut self.running {
                let exited = match service.child.try_wait() {
                    Ok(Some(status)) => status.to_string(),
                    Ok(None) => continue,
                    Err(e) => format!("cannot be waited for: {e}"),
                };
                if stop.received() {
                    return Ok(());
                }
                return Err(format!(
                    "{} exited unexpectedly ({exited}); see {}",
                    service.name,
                    service.log.display()
                ));
            }
            sleep(WATCH_POLL);
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        // Newest first: edges drain before the publisher, and NATS goes last.
        while let Some(mut service) = self.running.pop() {
            stop(&mut service);
        }
    }
}

/// SIGTERM first so services drain and NATS flushes its store; SIGKILL if that takes too long.
fn stop(service: &mut Service) {
    if matches!(service.child.try_wait(), Ok(Some(_))) {
        return;
    }
    // Not `eprintln!`: it panics if stderr is gone (say, piped into a `head` that quit), and
    // a panic inside `Drop` during unwinding aborts, leaving the rest running.
    let _ = writeln!(std::io::stderr(), "xtask: stopping {}", service.name);
    // std can only SIGKILL; the `kill` utility is everywhere we support.
    let _ = Command::new("kill")
        .args(["-TERM", &service.child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if matches!(service.child.try_wait(), Ok(Some(_))) {
            return;
        }
        sleep(READY_POLL);
    }
    let _ = service.child.kill();
    let _ = service.child.wait();
}
