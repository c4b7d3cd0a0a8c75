//! Serving HTTP on an intercepted connection: hyper's HTTP/1.1 or HTTP/2 server by the
//! negotiated ALPN, with the idle timer and graceful drain on shutdown.

use std::{future::Future, pin::Pin, sync::Arc, sync::atomic::Ordering, time::Duration};

use hyper::{
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::{
    Intercept,
    activity::{LastActivity, Tracked},
    context::ConnectionContext,
    phases,
};
use crate::tls::Alpn;

/// Serves HTTP on `io` until the app closes, the connection idles out, or shutdown drains it.
pub async fn serve_http<S>(
    proxy: Arc<Intercept>,
    conn: Arc<ConnectionContext>,
    io: S,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = LastActivity::new();
    let io = TokioIo::new(Tracked::new(io, activity.clone()));
    let service = {
        let (proxy, conn) = (proxy.clone(), conn.clone());
        service_fn(move |req| phases::serve(proxy.clone(), conn.clone(), req))
    };
    let limits = &proxy.limits;
    if conn.alpn == Alpn::H2 {
        let connection = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Each LLM request may be held for inspection (bounded per request): bound how many
            // one connection can have in flight.
            .max_concurrent_streams(100)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(limits.h2_max_pending_accept_reset_streams)
            .max_local_error_reset_streams(limits.h2_max_local_error_reset_streams)
            .serve_connection(io, service);
        let graceful = http2::Connection::graceful_shutdown;
        drive(connection, graceful, &proxy, &conn, &activity).await
    } else {
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes)
            .serve_connection(io, service)
            .with_upgrades();
        let graceful = http1::UpgradeableConnection::graceful_shutdown;
        drive(connection, graceful, &proxy, &conn, &activity).await
    }
}

/// Polls `connection` to its end; starts a graceful shutdown on agent shutdown or when the
/// connection has had no exchange in flight and no bytes moving for the idle timeout.
async fn drive<C>(
    connection: C,
    graceful: impl Fn(Pin<&mut C>),
    proxy: &Intercept,
    conn: &ConnectionContext,
    activity: &LastActivity,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut connection = std::pin::pin!(connection);
    let idle = proxy.limits.idle_timeout;
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let mut closing = false;
    loop {
        tokio::select! {
            // The connection first, and no random branch order to draw on every wake-up.
            biased;
            r = connection.as_mut() => return r,
            () = proxy.shutdown.cancelled(), if !closing => {
                closing = true;
                debug!("draining the connection for shutdown");
                graceful(connection.as_mut());
            }
            () = tokio::time::sleep(tick), if !closing => {
                let quiet = conn.in_flight.load(Ordering::Acquire) == 0;
                if quiet && activity.idle_for() >= idle {
                    closing = true;
                    debug!("closing an idle connection");
                    graceful(connection.as_mut());
                }
            }
        }
    }
}
