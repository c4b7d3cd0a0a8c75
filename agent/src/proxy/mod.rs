//! The interception proxy: the [`Intercept`] connection handler.
//!
//! For each redirected connection it reads the ClientHello ([`crate::transport::sniff`]),
//! decides ([`route`]) between relaying it untouched ([`splice`]) and terminating TLS with a
//! leaf from the local CA ([`crate::tls`]), and then serves HTTP/1.1 or HTTP/2 ([`serve`]),
//! proxying each exchange to the provider over verified TLS in phases ([`exchange`]). Every
//! exchange and every relayed connection ends in an [`record::ExchangeRecord`] on a bounded
//! tee; inline analysis plugs in at [`hook::ExchangeHook`].

pub mod activity;
pub mod body;
pub mod build;
pub mod context;
pub mod error;
pub mod exchange;
pub mod headers;
pub mod hook;
pub mod metrics;
pub mod pool;
pub mod record;
pub mod rejected;
pub mod route;
pub mod serve;
pub mod splice;
pub mod upstream;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant, SystemTime},
};

use rustls::server::ResolvesServerCert;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::{
    context::{ConnectionContext, micros_since_epoch},
    hook::ExchangeHook,
    metrics::ProxyMetrics,
    pool::Pool,
    record::{ExchangeRecord, RecordTee},
    rejected::RejectedCerts,
    route::{Decision, InterceptNames, SpliceReason},
};
use crate::{
    admin::{metrics::TransportMetrics, status::RecentConnections},
    config::{ProxyConfig, UpstreamConfig},
    identity::ProcessDetails,
    tls::{Alpn, ServerTls, UpstreamTls},
    transport::{Accepted, ConnectionHandler, Redirect, prefixed::Prefixed, sniff},
};

/// Limits and timeouts, from `[proxy]` and `[upstream]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wait for a complete ClientHello.
    pub client_hello_timeout: Duration,
    /// Largest ClientHello read.
    pub max_client_hello_bytes: usize,
    /// TLS handshakes (both legs).
    pub handshake_timeout: Duration,
    /// HTTP/1.1 request head.
    pub header_read_timeout: Duration,
    /// No exchange and no bytes for this long closes an app connection.
    pub idle_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// TCP connect to providers.
    pub connect_timeout: Duration,
}

impl Limits {
    /// From the configuration sections.
    pub fn from_config(proxy: &ProxyConfig, upstream: &UpstreamConfig) -> Self {
        Self {
            client_hello_timeout: Duration::from_millis(proxy.client_hello_timeout_ms),
            max_client_hello_bytes: proxy.max_client_hello_bytes,
            handshake_timeout: Duration::from_millis(proxy.handshake_timeout_ms),
            header_read_timeout: Duration::from_millis(proxy.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(proxy.idle_timeout_ms),
            max_header_bytes: proxy.max_header_bytes,
            connect_timeout: Duration::from_millis(upstream.connect_timeout_ms),
        }
    }
}

/// What [`Intercept::new`] is built from besides configuration.
#[derive(Debug)]
pub struct InterceptParts {
    /// Server names to intercept (those the CA covers).
    pub names: InterceptNames,
    /// Leaf certificates per server name (the CA crate's `SniResolver` in the agent).
    pub resolver: Arc<dyn ResolvesServerCert>,
    /// TLS to providers.
    pub upstream_tls: UpstreamTls,
    /// `SO_MARK` of the agent's upstream sockets.
    pub socket_mark: u32,
    /// Proxy metrics.
    pub metrics: Arc<ProxyMetrics>,
    /// Transport metrics (relayed bytes, connect errors).
    pub transport_metrics: Arc<TransportMetrics>,
    /// Where `/status` finds recent connections.
    pub recent: Arc<RecentConnections>,
    /// Where exchange records go.
    pub tee: RecordTee,
    /// Inline analysis.
    pub hook: Arc<dyn ExchangeHook>,
    /// Cancelled on shutdown: connections drain.
    pub shutdown: CancellationToken,
}

/// The connection handler that intercepts configured names and relays everything else.
#[derive(Debug)]
pub struct Intercept {
    names: InterceptNames,
    server_tls: ServerTls,
    upstream_tls: UpstreamTls,
    pool: Pool,
    limits: Limits,
    socket_mark: u32,
    rejected: RejectedCerts,
    metrics: Arc<ProxyMetrics>,
    transport_metrics: Arc<TransportMetrics>,
    recent: Arc<RecentConnections>,
    tee: RecordTee,
    hook: Arc<dyn ExchangeHook>,
    shutdown: CancellationToken,
}

impl Intercept {
    /// Builds the handler.
    pub fn new(proxy: &ProxyConfig, upstream: &UpstreamConfig, parts: InterceptParts) -> Self {
        Self {
            names: parts.names,
            server_tls: ServerTls::new(&parts.resolver),
            upstream_tls: parts.upstream_tls,
            pool: Pool::new(
                proxy.pool_max_idle_per_key,
                Duration::from_millis(proxy.pool_idle_timeout_ms),
            ),
            limits: Limits::from_config(proxy, upstream),
            socket_mark: parts.socket_mark,
            rejected: RejectedCerts::new(
                proxy.rejected_cert_capacity,
                Duration::from_secs(proxy.rejected_cert_ttl_s),
            ),
            metrics: parts.metrics,
            transport_metrics: parts.transport_metrics,
            recent: parts.recent,
            tee: parts.tee,
            hook: parts.hook,
            shutdown: parts.shutdown,
        }
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.metrics
    }

    /// The memory of apps that rejected the llmtrace certificate.
    pub fn rejected(&self) -> &RejectedCerts {
        &self.rejected
    }

    async fn mitm(
        self: &Arc<Self>,
        meta: &ConnectionMeta,
        stream: Prefixed<TcpStream>,
        sni: String,
        protocols: Vec<Vec<u8>>,
    ) {
        let accepted = self
            .server_tls
            .accept(stream, &protocols, self.limits.handshake_timeout)
            .await;
        let tls = match accepted {
            Ok(tls) => tls,
            Err(failure) => {
                self.metrics.handshake_failure(failure.cause());
                if failure.is_certificate_rejection() {
                    self.rejected.remember(meta.who(), &sni, Instant::now());
                    self.metrics.rejected_certificate_remembered.inc();
                    warn!(conn = meta.id, sni, exe = meta.who(), error = %failure,
                        "the app does not trust the llmtrace CA for this name; its next connections to it are relayed untouched");
                } else {
                    warn!(conn = meta.id, sni, error = %failure, "TLS handshake with the app failed");
                }
                meta.finish(self, true, None, 0, 0, Some(failure.to_string()));
                return;
            }
        };
        let alpn = Alpn::from_negotiated(tls.get_ref().1.alpn_protocol());
        let ctx = Arc::new(ConnectionContext {
            id: meta.id,
            client: meta.client,
            orig_dst: meta.redirect.orig_dst,
            process: meta.redirect.process.clone(),
            exe: meta.exe.clone(),
            sni: sni.as_str().into(),
            alpn,
            exchanges: std::sync::atomic::AtomicU32::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
        });
        debug!(conn = meta.id, sni, alpn = alpn.as_str(), "intercepting");
        let result = serve::serve_http(self.clone(), ctx.clone(), tls).await;
        let error = result.err().map(|e| e.to_string());
        if let Some(e) = &error {
            debug!(conn = meta.id, error = %e, "intercepted connection ended with an error");
        }
        let (up, down) = (
            ctx.bytes_up.load(std::sync::atomic::Ordering::Relaxed),
            ctx.bytes_down.load(std::sync::atomic::Ordering::Relaxed),
        );
        self.recent.closed(meta.id, up, down, error);
    }
}

impl ConnectionHandler for Intercept {
    async fn handle(self: Arc<Self>, conn: Accepted) {
        let details = ProcessDetails::inspect(conn.redirect.process.pid);
        self.recent.opened(&conn, &details);
        let Accepted {
            id,
            mut stream,
            client,
            redirect,
            ..
        } = conn;
        let mut meta = ConnectionMeta {
            id,
            client,
            redirect,
            started: Instant::now(),
            started_at: SystemTime::now(),
            exe: details.exe,
            sni: None,
        };
        let l = &self.limits;
        let sniffed = match sniff::read_client_hello(
            &mut stream,
            l.max_client_hello_bytes,
            l.client_hello_timeout,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                info!(conn = id, error = %e, "the app's connection failed before its ClientHello");
                meta.finish(&self, false, None, 0, 0, Some(e.to_string()));
                return;
            }
        };
        meta.sni = sniffed.hello.as_ref().ok().and_then(|h| h.sni.clone());
        let decision = route::decide(&sniffed.hello, &self.names, |sni| {
            self.rejected.contains(meta.who(), sni, Instant::now())
        });
        match decision {
            Decision::Splice(reason) => {
                self.metrics.connection("splice", reason.as_str());
                if let SpliceReason::NotHello(why) = reason {
                    info!(
                        conn = id,
                        reason = why.as_str(),
                        "no usable TLS ClientHello; relaying untouched"
                    );
                }
                splice::relay(&self, &meta, stream, sniffed.buffered, reason).await;
            }
            Decision::Mitm { sni, protocols } => {
                self.metrics.connection("mitm", "intercepted_name");
                let stream = Prefixed::new(sniffed.buffered, stream);
                self.mitm(&meta, stream, sni, protocols).await;
            }
        }
    }
}

/// What is known about a connection before (or without) HTTP.
#[derive(Debug)]
pub struct ConnectionMeta {
    /// Connection id.
    pub id: u64,
    /// The app's endpoint.
    pub client: SocketAddr,
    /// Destination and process.
    pub redirect: Redirect,
    /// Start (monotonic).
    pub started: Instant,
    /// Start (wall clock).
    pub started_at: SystemTime,
    /// Executable path.
    pub exe: Option<String>,
    /// Server name from the ClientHello.
    pub sni: Option<String>,
}

impl ConnectionMeta {
    /// The app's identity for the rejected-certificate memory: its executable, or its command
    /// name when the executable cannot be read.
    pub fn who(&self) -> &str {
        self.exe
            .as_deref()
            .unwrap_or(self.redirect.process.comm.as_str())
    }

    /// Records a connection that carried no HTTP exchange of its own (relayed, or failed
    /// before HTTP), and closes it in `/status`.
    pub fn finish(
        &self,
        proxy: &Intercept,
        intercepted: bool,
        reason: Option<SpliceReason>,
        bytes_up: u64,
        bytes_down: u64,
        error: Option<String>,
    ) {
        proxy
            .recent
            .closed(self.id, bytes_up, bytes_down, error.clone());
        proxy.tee.emit(ExchangeRecord {
            connection_id: self.id,
            exchange_seq: 0,
            started_at_us: micros_since_epoch(self.started_at),
            first_byte_us: None,
            duration_us: self.started.elapsed().as_micros() as u64,
            sni: self.sni.clone(),
            alpn: Alpn::None.as_str(),
            upstream_alpn: None,
            http_version: None,
            method: None,
            path: None,
            status: None,
            bytes_up,
            bytes_down,
            client: self.client,
            orig_dst: self.redirect.orig_dst,
            process: self.redirect.process.clone(),
            exe: self.exe.clone(),
            error,
            intercepted,
            not_intercepted_reason: reason.map(SpliceReason::as_str),
        });
    }
}
