//! `cargo xtask up` stops what it started when it alone is signalled (a
//! supervisor, `timeout`, `kill`), not only on a terminal's Ctrl-C, which
//! signals the whole process group.
//!
//! Runs the real `up` on free ports with the binaries `cargo xtask test`
//! builds first, sends SIGTERM (then, in a second run, SIGINT) to the xtask
//! process only, and checks that every child it had is gone.

// A test that drives a CLI reports what it saw on stderr.
#![allow(clippy::print_stderr)]

use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// Building nothing, starting five services takes a few seconds; allow for a loaded CI box.
const STARTED_WITHIN: Duration = Duration::from_secs(60);
/// Each child gets 5 s of grace after SIGTERM; five of them, with room to spare.
const STOPPED_WITHIN: Duration = Duration::from_secs(30);

#[test]
fn up_stops_its_children_on_sigterm_to_itself_alone() {
    stops_children_on("TERM");
}

#[test]
fn up_stops_its_children_on_sigint_to_itself_alone() {
    stops_children_on("INT");
}

fn stops_children_on(signal: &str) {
    let target = Path::new(env!("CARGO_BIN_EXE_xtask"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    for bin in ["herald-edge", "herald-publisher", "calendar-service"] {
        assert!(
            target.join(bin).exists(),
            "{bin} is not built in {}: run this through `cargo xtask test`, which builds it first",
            target.display()
        );
    }
    let mut up = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["up", "--free-ports", "--no-build"])
        // Its own process group: no signal meant for the test runner reaches it, and ours
        // reach only it, never its children.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("xtask starts");
    let pid = up.id();

    // The tour is printed once every service answered ready.
    let stdout = up.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("Herald is up") {
                let _ = ready_tx.send(());
            }
        }
    });
    if ready_rx.recv_timeout(STARTED_WITHIN).is_err() {
        let _ = up.kill();
        panic!("`xtask up` did not come up within {STARTED_WITHIN:?}");
    }
    let children = children_of(pid);
    if children.len() != 5 {
        // Stop them before failing: a panic here would leave them running.
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = up.wait();
        panic!("nats-server, the publisher, two edges and calendar-service: {children:?}");
    }

    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + STOPPED_WITHIN;
    let status = loop {
        if let Some(status) = up.try_wait().expect("waitable") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("`xtask up` still running {STOPPED_WITHIN:?} after SIG{signal}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    eprintln!("xtask up exited ({status}) after SIG{signal}");
    let left: Vec<u32> = children.into_iter().filter(|&c| alive(c)).collect();
    for &child in &left {
        let _ = Command::new("kill")
            .args(["-KILL", &child.to_string()])
            .status();
    }
    assert!(left.is_empty(), "children left running: {left:?}");
    assert!(
        status.success(),
        "a signal is an ordinary way to stop `up`: {status}"
    );
}

/// The direct children of `pid`, from procfs.
fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        .split_whitespace()
        .map(|c| c.parse().expect("a pid"))
        .collect()
}

/// Whether `pid` is a live process (a zombie counts as gone: it runs nothing).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}
