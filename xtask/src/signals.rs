//! SIGINT, SIGTERM and SIGHUP as a flag the long-running commands poll, so
//! that a signal sent to xtask alone (by a supervisor, `timeout` or `kill`,
//! not by a terminal to the whole process group) still stops its children.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Set once any of the stop signals arrived.
#[derive(Debug, Clone)]
pub(crate) struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// Replaces the default action (exit at once, skipping destructors) of the
    /// stop signals with setting this flag.
    pub(crate) fn install() -> Result<Self, String> {
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register(signal, flag.clone())
                .map_err(|e| format!("cannot handle signal {signal}: {e}"))?;
        }
        Ok(Self(flag))
    }

    pub(crate) fn received(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
