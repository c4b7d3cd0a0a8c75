//! The pass-through handler: relays a redirected connection to its original destination
//! untouched, and records it (metadata only: nothing is decrypted).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tracing::{info, warn};

use super::{Accepted, ConnectionHandler, splice::splice, upstream::connect_marked};
use crate::{
    admin::{metrics::TransportMetrics, status::RecentConnections},
    identity::ProcessDetails,
    sink::SinkHandle,
    trace::{ConnectionFacts, Fleet, relayed_connection},
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
    /// Where trace rows go.
    pub sink: SinkHandle,
    /// Which agent of the fleet writes the rows.
    pub fleet: Arc<Fleet>,
}

impl ConnectionHandler for Passthrough {
    async fn handle(self: Arc<Self>, mut conn: Accepted) {
        let details = ProcessDetails::inspect(conn.redirect.process.pid);
        self.recent.opened(&conn, &details);
        let dst = conn.redirect.orig_dst;
        let (up, down, error) = match connect_marked(
            dst,
            self.socket_mark,
            self.connect_timeout,
            conn.redirect.process.netns_cookie,
        )
        .await
        {
            Ok(mut upstream) => match splice(&mut conn.stream, &mut upstream).await {
                Ok(s) => (s.bytes_up, s.bytes_down, None),
                Err(e) => (0, 0, Some(e.to_string())),
            },
            Err(e) => {
                self.metrics.upstream_connect_errors.inc();
                warn!(conn = conn.id, error = %e, "cannot reach the original destination; closing the client connection");
                (0, 0, Some(e.to_string()))
            }
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
        let facts = ConnectionFacts {
            connection_id: conn.id,
            fleet: &self.fleet,
            orig_dst: dst,
            provider: &conn.provider,
            process: &conn.redirect.process,
            details: &details,
        };
        self.sink.record(relayed_connection(
            &facts,
            conn.accepted_at,
            SystemTime::now(),
            up,
            down,
            "passthrough",
            error.clone(),
        ));
        self.recent.closed(conn.id, up, down, error);
    }
}
