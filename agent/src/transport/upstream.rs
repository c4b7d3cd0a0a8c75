//! The agent's sockets to original destinations: marked so the kernel never redirects them
//! back to the agent, and with Nagle off so small writes are not held for a delayed ACK.

use std::{io, net::SocketAddr, time::Duration};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

/// Why an upstream connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot create a marked socket (SO_MARK needs CAP_NET_ADMIN): {0}")]
    Socket(io::Error),
    #[error("connecting to {addr} failed: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

/// Connects to `addr` from a socket carrying `mark`.
pub async fn connect_marked(
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let socket = marked_socket(addr, mark).map_err(ConnectError::Socket)?;
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

fn marked_socket(addr: SocketAddr, mark: u32) -> io::Result<TcpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_mark(mark)?;
    socket.set_nonblocking(true)?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}
