//! The agent's sockets to original destinations: marked so the kernel never redirects them
//! back to the agent, with Nagle off so small writes are not held for a delayed ACK, and
//! created inside the app's own network namespace, so a pod's provider connection leaves
//! through the pod's routes, firewall and NetworkPolicy as if the app had made it.

use std::{io, net::SocketAddr, time::Duration};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::netns::{self, NamespaceError};

/// Why an upstream connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot create a marked socket (SO_MARK needs CAP_NET_ADMIN): {0}")]
    Socket(io::Error),
    #[error("cannot open a socket in the app's network namespace: {0}")]
    Namespace(#[from] NamespaceError),
    #[error("connecting to {addr} failed: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

/// Connects to `addr` from a socket carrying `mark`, created in the network namespace with
/// cookie `netns_cookie` (the app's, from its kernel record; 0 or the agent's own cookie
/// mean the agent's namespace).
pub async fn connect_marked(
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
    netns_cookie: u64,
) -> Result<TcpStream, ConnectError> {
    let socket = match netns::socket_namespace(netns_cookie)? {
        None => marked_socket(addr, mark),
        Some(ns) => netns::run_in(ns, move || marked_socket(addr, mark)).await,
    }
    .map_err(ConnectError::Socket)?;
    let socket = TcpSocket::from_std_stream(socket.into());
    let connect = socket.connect(addr);
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| ConnectError::Timeout { addr, timeout })?
        .map_err(|source| ConnectError::Connect { addr, source })?;
    stream
        .set_nodelay(true)
        .map_err(|source| ConnectError::Connect { addr, source })?;
    Ok(stream)
}

fn marked_socket(addr: SocketAddr, mark: u32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_mark(mark)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}
