//! The pass-through handler: relays a redirected connection to its original destination
//! untouched, and records it (metadata only: nothing is decrypted).

use std::{sync::Arc, time::Duration};

use tracing::{info, warn};

use super::{Accepted, ConnectionHandler, splice::splice, upstream::connect_marked};
use crate::{
    admin::{metrics::TransportMetrics, status::RecentConnections},
    identity::ProcessDetails,
};

/// Relays every connection byte for byte to where the app was going.
#[derive(Debug)]
pub struct Passthrough {
    /// Mark for upstream sockets (never redirected by the kernel hook).
    pub socket_mark: u32,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Transport metrics.
    pub metrics: Arc<TransportMetrics>,
    /// Where `/status` finds recent connections.
    pub recent: Arc<RecentConnections>,
}

impl ConnectionHandler for Passthrough {
    async fn handle(self: Arc<Self>, mut conn: Accepted) {
        let details = ProcessDetails::inspect(conn.redirect.process.pid);
        self.recent.opened(&conn, &details);
        let dst = conn.redirect.orig_dst;
        let mut upstream = match connect_marked(dst, self.socket_mark, self.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                self.metrics.upstream_connect_errors.inc();
                warn!(conn = conn.id, error = %e, "cannot reach the original destination; closing the client connection");
                self.recent.closed(conn.id, 0, 0, Some(e.to_string()));
                return;
            }
        };
        let result = splice(&mut conn.stream, &mut upstream).await;
        let (up, down, error) = match result {
            Ok(s) => (s.bytes_up, s.bytes_down, None),
            Err(e) => (0, 0, Some(e.to_string())),
        };
        self.metrics.bytes_up.inc_by(up);
        self.metrics.bytes_down.inc_by(down);
        info!(
            conn = conn.id,
            bytes_up = up,
            bytes_down = down,
            error = error.as_deref(),
            "connection closed"
        );
        self.recent.closed(conn.id, up, down, error);
    }
}
