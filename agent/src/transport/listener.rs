//! Accepting redirected connections.

use std::{
    io,
    net::SocketAddr,
    os::fd::AsFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::metrics::TransportMetrics;
use super::{Accepted, ConnectionHandler, OriginalDst, workers::Workers};

/// Binds the listeners the kernel redirects to. `SO_REUSEADDR` lets a restarted agent bind
/// while old connections linger in `TIME_WAIT`.
pub fn bind(addrs: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|addr| {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket
                .bind(*addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            socket.listen(4096)
        })
        .collect()
}

/// Shared state of the accept loops.
pub struct Acceptor<O, H> {
    /// Original-destination source.
    pub orig_dst: Arc<O>,
    /// Handler for attributed connections.
    pub handler: Arc<H>,
    /// Names of providers by index, for metric labels.
    pub provider_names: Arc<Vec<String>>,
    /// Transport metrics.
    pub metrics: Arc<TransportMetrics>,
    /// At most this many connections are served at once; more are closed at accept.
    pub limit: Arc<Semaphore>,
    /// Connection ids.
    pub next_id: AtomicU64,
    /// The threads connections are served on.
    pub workers: Arc<Workers>,
}

impl<O, H> std::fmt::Debug for Acceptor<O, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("available", &self.limit.available_permits())
            .finish_non_exhaustive()
    }
}

impl<O: OriginalDst, H: ConnectionHandler> Acceptor<O, H> {
    /// Accepts on `listener` until `shutdown`; connection tasks are tracked by `tasks` so the
    /// caller can drain them. The listener may live in any network namespace: records are
    /// looked up in the listener's own.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) {
        let netns_cookie = llmtrace_common::netns_cookie(listener.as_fd()).unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the listener's network namespace cookie (Linux 5.14+ needed)");
            0
        });
        loop {
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        warn!(error = %e, "accepting a connection failed; retrying shortly");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // The socket leaves this runtime's reactor: the worker that serves the connection
            // registers it with its own, so its wake-ups land on that worker's thread.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    warn!(client = %peer, error = %e, "cannot hand an accepted connection to a worker; closing it");
                    continue;
                }
            };
            // The loop only accepts: attribution, its log line and the limit check run in the
            // connection's own task, so the next accept (and, on a small machine, the app that
            // just connected) is not kept waiting behind them.
            self.workers
                .spawn(tasks.track_future(self.clone().serve(stream, peer, netns_cookie)));
        }
    }

    /// Attributes one accepted stream and, within the connection limit, hands it to the
    /// handler.
    async fn serve(
        self: Arc<Self>,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        netns_cookie: u64,
    ) {
        let stream = match TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                warn!(client = %peer, error = %e, "cannot register an accepted connection; closing it");
                return;
            }
        };
        let Some(conn) = self.admit(stream, peer, netns_cookie).await else {
            return;
        };
        let Ok(permit) = self.limit.clone().try_acquire_owned() else {
            self.metrics.rejected_over_limit.inc();
            warn!(client = %peer, "connection limit reached; closing a redirected connection");
            return;
        };
        self.metrics.active.inc();
        // The lines about this connection name it through this span (its exchanges' spans,
        // HTTP/2 ones on tasks of their own, are children of it).
        let span = info_span!("conn", id = conn.id);
        span.in_scope(|| {
            info!(
                client = %conn.client,
                orig_dst = %conn.redirect.orig_dst,
                provider = %conn.provider,
                pid = conn.redirect.process.pid,
                comm = %conn.redirect.process.comm,
                uid = conn.redirect.process.uid,
                netns_cookie = conn.redirect.process.netns_cookie,
                "redirected connection"
            );
        });
        self.handler.clone().handle(conn).instrument(span).await;
        self.metrics.active.dec();
        drop(permit);
    }

    /// Attributes an accepted stream, or closes it when the kernel has no record for it.
    async fn admit(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        netns_cookie: u64,
    ) -> Option<Accepted> {
        // Nagle would hold small writes for the peer's delayed ACK (a 40 ms stall per request).
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "setting TCP_NODELAY failed");
        }
        let peer = canonical(peer);
        let redirect = if let Some(r) = self.orig_dst.lookup(netns_cookie, peer) {
            r
        } else {
            // The record is written before the client's final ACK, so a miss is rare; one
            // yield covers a lookup that raced the map update on another CPU.
            tokio::task::yield_now().await;
            let Some(r) = self.orig_dst.lookup(netns_cookie, peer) else {
                self.metrics.unattributed.inc();
                warn!(client = %peer, "closing a connection with no redirect record (not sent by the kernel hook)");
                return None;
            };
            r
        };
        let provider = self
            .provider_names
            .get(redirect.provider_index as usize)
            .cloned()
            .unwrap_or_else(|| "unknown".to_owned());
        self.metrics.redirected(&provider);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Some(Accepted {
            id,
            stream,
            client: peer,
            redirect,
            provider,
            accepted_at: SystemTime::now(),
        })
    }
}

/// IPv4 peers of a dual-stack socket show up as v4-mapped IPv6; use the plain form.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}
