//! Serving HTTP on an intercepted connection: hyper's HTTP/1.1 or HTTP/2 server by the
//! negotiated ALPN, with the idle timer and graceful drain on shutdown.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::Poll,
    time::{Duration, Instant},
};

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
    own_wake::OwnWake,
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
/// connection has had no exchange in flight and no bytes moving for the idle timeout. The
/// watch for those is polled only when its token or timer woke the task, not on every
/// wake-up of the connection (see [`OwnWake`]).
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
    let mut watch = Some(OwnWake::new(close_reason(proxy, conn, activity)));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = connection.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if let Some(w) = &mut watch
            && let Poll::Ready(why) = w.poll_if_woken(cx)
        {
            watch = None;
            debug!("{why}");
            graceful(connection.as_mut());
            // Shutting down may let the connection end at once.
            return connection.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
}

/// Waits for a reason to close the connection gracefully: agent shutdown, or no exchange in
/// flight and no bytes moving for the idle timeout (checked a few times per timeout).
async fn close_reason(
    proxy: &Intercept,
    conn: &ConnectionContext,
    activity: &LastActivity,
) -> &'static str {
    let idle = proxy.limits.idle_timeout;
    let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let idled = async {
        // When bytes last moved or an exchange was last seen in flight, to a tick's
        // precision; the connection's start counts. The time is taken at the tick that saw
        // the activity, never before it, so a connection is never closed early (at most two
        // ticks late).
        let mut active_at = Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let now = Instant::now();
            let busy = conn.in_flight.load(Ordering::Acquire) > 0;
            if activity.take_moved() || busy {
                active_at = now;
            } else if now.duration_since(active_at) >= idle {
                return;
            }
        }
    };
    tokio::select! {
        biased;
        () = proxy.shutdown.cancelled() => "draining the connection for shutdown",
        () = idled => "closing an idle connection",
    }
}
