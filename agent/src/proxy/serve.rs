//! Serving HTTP on an intercepted connection: hyper's HTTP/1.1 or HTTP/2 server by the
//! negotiated ALPN, with the idle timer and graceful drain on shutdown.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use hyper::{
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    Intercept,
    activity::{Activity, Tracked},
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
    let activity = Activity::new();
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
    activity: &Activity,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let mut connection = std::pin::pin!(connection);
    let watch = close_reason(
        &proxy.shutdown,
        proxy.limits.idle_timeout,
        &conn.in_flight,
        activity,
    );
    let mut watch = Some(OwnWake::new(watch));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = connection.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if let Some(w) = &mut watch
            && let Poll::Ready(why) = w.poll_if_woken(cx)
        {
            watch = None;
            debug!(reason = why.as_str(), "closing the connection gracefully");
            graceful(connection.as_mut());
            // Shutting down may let the connection end at once.
            return connection.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
}

/// Why a connection is closed gracefully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// The agent is shutting down: connections drain.
    Shutdown,
    /// No exchange in flight and no bytes moved for the idle timeout.
    Idle,
}

impl Closing {
    fn as_str(self) -> &'static str {
        match self {
            Self::Shutdown => "agent shutdown",
            Self::Idle => "idle",
        }
    }
}

/// Waits for a reason to close the connection gracefully: `shutdown` cancelled, or no
/// exchange in flight and no bytes moving for `idle` (checked a few times per timeout).
async fn close_reason(
    shutdown: &CancellationToken,
    idle: Duration,
    in_flight: &AtomicUsize,
    activity: &Activity,
) -> Closing {
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
            let busy = in_flight.load(Ordering::Acquire) > 0;
            if activity.take_moved() || busy {
                active_at = now;
            } else if now.duration_since(active_at) >= idle {
                return;
            }
        }
    };
    tokio::select! {
        biased;
        () = shutdown.cancelled() => Closing::Shutdown,
        () = idled => Closing::Idle,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    const IDLE: Duration = Duration::from_secs(8);
    /// The watch's tick for [`IDLE`].
    const TICK: Duration = Duration::from_secs(2);

    struct Conn {
        shutdown: CancellationToken,
        in_flight: AtomicUsize,
        activity: Arc<Activity>,
    }

    impl Conn {
        fn new() -> Self {
            Self {
                shutdown: CancellationToken::new(),
                in_flight: AtomicUsize::new(0),
                activity: Activity::new(),
            }
        }

        async fn close_reason(&self) -> Closing {
            close_reason(&self.shutdown, IDLE, &self.in_flight, &self.activity).await
        }

        /// Marks bytes moved, as a read or a write of the connection does.
        fn touch(&self) {
            let (near, _far) = tokio::io::duplex(8);
            let mut tracked = Tracked::new(near, self.activity.clone());
            let waker = std::task::Waker::noop();
            let written =
                Pin::new(&mut tracked).poll_write(&mut std::task::Context::from_waker(waker), b"x");
            assert!(matches!(written, Poll::Ready(Ok(1))));
        }
    }

    // The clock is paused: time advances only when every task waits, so the durations below
    // are the watch's logic, not the machine's speed.

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_closes_after_the_timeout_never_before() {
        let c = Conn::new();
        let started = Instant::now();
        assert_eq!(c.close_reason().await, Closing::Idle);
        let waited = started.elapsed();
        assert!(waited >= IDLE, "closed after {waited:?}");
        assert!(waited <= IDLE + 2 * TICK, "closed after {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn moving_bytes_keep_a_connection_open_until_they_stop() {
        let c = Conn::new();
        let started = Instant::now();
        let watch = async {
            let why = c.close_reason().await;
            (why, Instant::now())
        };
        let traffic = async {
            // A byte every 3 s (more than a tick, less than the timeout) for 30 s; the last
            // at 27 s.
            for _ in 0..10 {
                c.touch();
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Instant::now() - Duration::from_secs(3)
        };
        let ((closing, closed_at), last_byte) = tokio::join!(watch, traffic);
        assert_eq!(closing, Closing::Idle);
        let (closed, quiet) = (closed_at - started, closed_at.duration_since(last_byte));
        assert!(closed >= Duration::from_secs(30), "closed after {closed:?}");
        assert!(quiet >= IDLE, "quiet for {quiet:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_exchange_in_flight_is_not_idle_however_long_it_is_silent() {
        let c = Conn::new();
        let mut watch = std::pin::pin!(c.close_reason());
        c.in_flight.store(1, Ordering::Release);
        let silent = tokio::time::timeout(10 * IDLE, watch.as_mut()).await;
        assert!(silent.is_err(), "closed with an exchange in flight");
        // Once it ends, the same watch idles the connection out counting from the last tick
        // that saw it in flight (at most a tick before its end), not from the last byte,
        // which never moved here. (In use, the response's last bytes move at its end.)
        c.in_flight.store(0, Ordering::Release);
        let ended = Instant::now();
        assert_eq!(watch.await, Closing::Idle);
        assert!(ended.elapsed() + TICK >= IDLE, "{:?}", ended.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_at_once() {
        let c = Conn::new();
        c.in_flight.store(1, Ordering::Release);
        let started = Instant::now();
        c.shutdown.cancel();
        assert_eq!(c.close_reason().await, Closing::Shutdown);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
