//! One service process started by the load generator: its output goes to a log file, and it is
//! killed (SIGKILL) and reaped when dropped, on every way out of a scenario, panics included.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::Context as _;

/// A running child process.
#[derive(Debug)]
pub(crate) struct Service {
    name: String,
    child: Child,
    log: PathBuf,
    /// Bytes of the log written while starting, which the diagnostics skip.
    startup_log_bytes: u64,
}

impl Service {
    /// Starts `cmd` with stdout and stderr appended to `<log_dir>/<name>.log`, and with no
    /// inherited `HERALD_*` or `OTEL_*` variable but those `cmd` sets itself.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let file_too = file.try_clone().context("reopening the log")?;
        let set: Vec<_> = cmd.get_envs().map(|(key, _)| key.to_owned()).collect();
        for (key, _) in std::env::vars_os() {
            let inherited = key.to_string_lossy();
            if (inherited.starts_with("HERALD_") || inherited.starts_with("OTEL_"))
                && !set.contains(&key)
            {
                cmd.env_remove(&key);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(file_too)
            .spawn()
            .with_context(|| format!("starting {name} ({})", cmd.get_program().display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            startup_log_bytes: 0,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Marks what the log holds so far as start-up: a cluster node logs errors while its
    /// peers are still starting (routes refused, no meta leader yet), which are expected.
    pub(crate) fn end_startup_log(&mut self) {
        self.startup_log_bytes = std::fs::metadata(&self.log).map_or(0, |m| m.len());
    }

    /// The log after start-up (see [`Service::end_startup_log`]).
    pub(crate) fn log_after_startup(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let from = (self.startup_log_bytes as usize).min(text.len());
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    /// `Some(why)` when the process has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("cannot be waited for: {err}")),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
