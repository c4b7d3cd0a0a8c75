//! Relaying a connection that is not intercepted: the sniffed bytes are replayed to the
//! original destination, then both directions are copied untouched (half-close included).

use tokio::net::TcpStream;
use tracing::{info, warn};

use super::{ConnectionMeta, Intercept, rejected, route::SpliceReason};
use crate::transport::{prefixed::Prefixed, splice::splice_io, upstream::connect_marked};

/// Relays `stream` (whose first bytes are `buffered`) to where the app was going.
pub async fn relay(
    proxy: &Intercept,
    meta: &ConnectionMeta,
    stream: TcpStream,
    buffered: Vec<u8>,
    reason: SpliceReason,
) {
    let dst = meta.redirect.orig_dst;
    let mut upstream = match connect_marked(
        dst,
        proxy.socket_mark,
        proxy.limits.connect_timeout,
        meta.redirect.process.netns_cookie,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            proxy.transport_metrics.upstream_connect_errors.inc();
            warn!(error = %e, "cannot reach the original destination; closing the client connection");
            proxy.record_without_exchange(meta, false, Some(reason), 0, 0, Some(e.to_string()));
            return;
        }
    };
    let mut client = Prefixed::new(buffered, stream);
    let (up, down, error) = match splice_io(&mut client, &mut upstream).await {
        Ok(s) => (s.bytes_up, s.bytes_down, None),
        Err(e) => (0, 0, Some(e.to_string())),
    };
    proxy.transport_metrics.bytes_up.inc_by(up);
    proxy.transport_metrics.bytes_down.inc_by(down);
    info!(
        reason = reason.as_str(),
        sni = meta.sni.as_deref(),
        bytes_up = up,
        bytes_down = down,
        error = error.as_deref(),
        "relayed connection closed (not intercepted)"
    );
    let error = if reason == SpliceReason::RejectedCertificateUnenforced {
        // The audit trail must show that enforcement was bypassed, whatever else happened.
        Some(match error {
            Some(e) => format!("{}; {e}", rejected::UNENFORCED),
            None => rejected::UNENFORCED.to_owned(),
        })
    } else {
        error
    };
    proxy.record_without_exchange(meta, false, Some(reason), up, down, error);
}
