//! Redirected connections: listeners, original-destination lookup, upstream sockets, splice.
//!
//! The kernel sends provider connections to the agent's listeners; [`listener`] accepts them,
//! asks an [`OriginalDst`] source where each was going and who made it, and hands the result,
//! an [`Accepted`], to a [`ConnectionHandler`]. Connections the kernel did not redirect (no
//! record) are closed: the agent only ever connects to destinations the kernel reported.

pub mod listener;
pub mod metrics;
pub mod orig_dst;
pub mod prefixed;
pub mod read_ahead;
pub mod sniff;
pub mod splice;
pub mod upstream;
pub mod workers;

use std::{future::Future, net::SocketAddr, sync::Arc, time::SystemTime};

use tokio::net::TcpStream;

pub use orig_dst::{FixedOriginalDst, OriginalDst, ProcessInfo, Redirect};

/// A redirected connection, attributed, ready for a handler.
#[derive(Debug)]
pub struct Accepted {
    /// Agent-wide connection id (monotonic, starts at 1).
    pub id: u64,
    /// The app's socket, accepted by the agent (`TCP_NODELAY` already set).
    pub stream: TcpStream,
    /// The app's local endpoint (the peer of `stream`).
    pub client: SocketAddr,
    /// Where the app was going and who it is.
    pub redirect: Redirect,
    /// Provider name of the matching provider-list entry.
    pub provider: String,
    /// When the agent accepted it.
    pub accepted_at: SystemTime,
}

/// Handles one accepted connection to its end.
pub trait ConnectionHandler: Send + Sync + 'static {
    /// Serves `conn` until it closes. Errors are the handler's to log and count.
    fn handle(self: Arc<Self>, conn: Accepted) -> impl Future<Output = ()> + Send;
}
