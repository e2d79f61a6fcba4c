//! Many client sockets as one: planned round-robin over the edges and over the source
//! addresses 127.0.0.2–9, connected at a bounded concurrency, waited for until every one has
//! its `welcome`, and closed all at once (each reports its cursors).

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use tokio::{sync::Semaphore, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    recorder::Recorder,
    socket::{self, SocketEnd, SocketSpec},
    stack::Stack,
};

/// Source addresses 127.0.0.2 up to this many: each gets its own ephemeral port range.
pub(crate) const SOURCE_ADDRESSES: usize = 8;
/// Handshakes in progress at once, unless a scenario asks for more.
pub(crate) const CONNECT_CONCURRENCY: usize = 200;
const POLL: Duration = Duration::from_millis(20);

/// Resume cursors for a reconnect: one user-channel seq per socket index.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    pub(crate) epoch: String,
    pub(crate) user_seqs: Vec<u64>,
}

/// Running sockets.
#[derive(Debug)]
pub(crate) struct Fleet {
    handles: Vec<JoinHandle<SocketEnd>>,
    cancel: CancellationToken,
}

/// One socket per user `u0`, `u1`, …: tokens with `namespace` granted and joined at connect
/// when given, resuming from `resume` when given.
pub(crate) fn plan(
    stack: &Stack,
    n_sockets: usize,
    namespace: Option<&str>,
    resume: Option<&Resume>,
) -> anyhow::Result<Vec<SocketSpec>> {
    if stack.edges.is_empty() {
        bail!("this scenario needs edges");
    }
    let grants: Vec<&str> = namespace.into_iter().collect();
    (0..n_sockets)
        .map(|index| {
            let user = format!("u{index}");
            let token = stack.keys.user_token(&user, &grants)?;
            let mut path_and_query = format!("/v1/ws?token={token}");
            if let Some(ns) = namespace {
                path_and_query.push_str(&format!("&ns={ns}"));
            }
            let since = resume.map(|resume| {
                let since = resume.user_seqs.get(index).copied().unwrap_or(0);
                path_and_query.push_str(&format!("&since={since}&epoch={}", resume.epoch));
                since
            });
            let n_edges = stack.edges.len();
            let host = 2 + (index / n_edges) % SOURCE_ADDRESSES;
            Ok(SocketSpec {
                index,
                edge: stack.edges[index % n_edges].addr,
                source: Ipv4Addr::new(127, 0, 0, u8::try_from(host).unwrap_or(2)),
                path_and_query,
                since,
            })
        })
        .collect()
}

impl Fleet {
    /// Starts every socket; at most `concurrency` handshakes run at once.
    pub(crate) fn spawn(
        specs: Vec<SocketSpec>,
        concurrency: usize,
        recorder: &Arc<Recorder>,
    ) -> Self {
        let cancel = CancellationToken::new();
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let handles = specs
            .into_iter()
            .map(|spec| {
                tokio::spawn(socket::run(
                    spec,
                    recorder.clone(),
                    gate.clone(),
                    cancel.clone(),
                ))
            })
            .collect();
        Self { handles, cancel }
    }

    /// Waits until every socket has its welcome (or gave up); fails if any gave up or
    /// `timeout` passes. Returns how long it took.
    pub(crate) async fn wait_welcomed(
        &self,
        recorder: &Recorder,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let n = self.handles.len() as u64;
        loop {
            let (welcomed, failed) = (recorder.n_welcomed(), recorder.n_failed());
            if welcomed + failed >= n {
                if failed > 0 {
                    bail!(
                        "{failed} of {n} sockets could not connect: {:?}",
                        recorder.other_frames()
                    );
                }
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "only {welcomed} of {n} sockets welcomed within {timeout:?} ({failed} failed)"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Closes every socket at once (client side) and returns how each ended, by index.
    pub(crate) async fn close(mut self) -> Vec<SocketEnd> {
        self.cancel.cancel();
        let handles = std::mem::take(&mut self.handles);
        let mut ends = Vec::with_capacity(handles.len());
        for handle in handles {
            if let Ok(end) = handle.await {
                ends.push(end);
            }
        }
        ends.sort_by_key(|end| end.index);
        ends
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // A scenario that failed half-way must not leave sockets reading.
        self.cancel.cancel();
    }
}
