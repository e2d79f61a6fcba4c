//! Listening sockets sized for reconnect storms.

use std::{io, net::SocketAddr};

use tokio::net::{TcpListener, TcpSocket};

/// The accept backlog. tokio's `TcpListener::bind` uses 128, which drops SYNs
/// when thousands of clients reconnect at once; the kernel caps this at
/// `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`] and `SO_REUSEADDR`.
///
/// # Errors
/// The address is taken or not local.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
