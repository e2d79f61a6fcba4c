//! A TCP proxy in front of an edge that can crash: every connection is cut
//! at once with a reset and new ones are refused, which is what the clients
//! of a killed edge process see (no close frame, frames in flight lost).

use std::{net::SocketAddr, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct CrashProxy {
    pub addr: SocketAddr,
    crashed: CancellationToken,
    accepting: JoinHandle<()>,
}

impl CrashProxy {
    /// Forwards every connection on a fresh local port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let crashed = CancellationToken::new();
        let accepting = tokio::spawn({
            let crashed = crashed.clone();
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(forward(client, target, crashed.clone()));
                }
            }
        });
        Self {
            addr,
            crashed,
            accepting,
        }
    }

    /// `ws://addr/v1/ws`
    pub fn ws_base(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Resets every connection and closes the port.
    pub fn crash(&self) {
        self.accepting.abort();
        self.crashed.cancel();
    }
}

impl Drop for CrashProxy {
    fn drop(&mut self) {
        self.crash();
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, crashed: CancellationToken) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        () = crashed.cancelled() => {
            // SO_LINGER 0: close with RST, like a process that died.
            for stream in [&client, &upstream] {
                let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
            }
        }
    }
}
