//! The interception proxy: the [`Intercept`] connection handler.
//!
//! For each redirected connection it reads the ClientHello ([`crate::transport::sniff`]),
//! decides ([`route`]) between relaying it untouched ([`splice`]) and terminating TLS with a
//! leaf from the local CA ([`crate::tls`]), and then serves HTTP/1.1 or HTTP/2 ([`serve`]),
//! proxying each exchange to the provider over verified TLS in phases ([`phases`]). Every
//! exchange and every relayed connection ends in an [`record::ExchangeRecord`] on a bounded
//! tee. The LLM analysis decides inline ([`inline_analysis`]) only what must be decided before
//! bytes move (the request verdict, a stream's early stop); the rest runs in the analysis pool
//! ([`deferred`]) after the response has been forwarded, and [`row`] maps each record onto its
//! trace row.

pub mod activity;
pub mod budget;
pub mod build;
pub mod context;
pub mod deferred;
pub mod ending;
pub mod error;
pub mod headers;
pub mod inline_analysis;
pub mod keyfile;
pub mod meta;
pub mod metrics;
mod mitm;
mod own_wake;
pub mod phases;
pub mod pool;
pub mod record;
pub mod rejected;
pub mod request_body;
pub mod response_body;
pub mod route;
pub mod row;
pub mod serve;
pub mod splice;
pub mod upstream;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::server::ResolvesServerCert;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::meta::ConnectionMeta;
use self::{
    budget::{ByteBudget, UidConnections},
    metrics::{ProxyMetrics, Routed},
    pool::Pool,
    record::RecordTee,
    rejected::{RejectKey, RejectedCerts},
    route::{Decision, InterceptNames, SpliceReason},
};
use crate::{
    admin::status::RecentConnections,
    config::{ProxyConfig, UpstreamConfig},
    identity::{DockerNames, NoPodDirectory, PodDirectory, ProcessDetails},
    llm::Engine,
    tls::{ServerTls, UpstreamTls},
    transport::{
        Accepted, ConnectionHandler, metrics::TransportMetrics, prefixed::Prefixed,
        read_ahead::ReadAhead, sniff,
    },
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
    /// From a sent request to the provider's response head.
    pub response_timeout: Duration,
    /// HTTP/2 streams reset by the app before being accepted, pending at once.
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2 streams reset by the proxy for the app's protocol errors.
    pub h2_max_local_error_reset_streams: usize,
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
            response_timeout: Duration::from_millis(upstream.response_timeout_ms),
            h2_max_pending_accept_reset_streams: proxy.h2_max_pending_accept_reset_streams,
            h2_max_local_error_reset_streams: proxy.h2_max_local_error_reset_streams,
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
    /// The LLM analysis engine (`None`: exchanges are recorded with HTTP facts only).
    pub engine: Option<Arc<Engine>>,
    /// Cancelled on shutdown: connections drain.
    pub shutdown: CancellationToken,
    /// What happens to connections that cannot be inspected.
    pub uninspectable: route::Uninspectable,
}

/// The connection handler that intercepts configured names and relays everything else.
#[derive(Debug)]
pub struct Intercept {
    names: InterceptNames,
    server_tls: ServerTls,
    upstream_tls: UpstreamTls,
    pool: Arc<Pool>,
    limits: Limits,
    socket_mark: u32,
    rejected: RejectedCerts,
    trust_learning: bool,
    /// Whether the policy blocks or redacts anything (relays of learnt distrust say so).
    enforcing: bool,
    uninspectable: route::Uninspectable,
    metrics: Arc<ProxyMetrics>,
    transport_metrics: Arc<TransportMetrics>,
    recent: Arc<RecentConnections>,
    tee: Arc<RecordTee>,
    /// The LLM engine in force (replaced when SIGHUP reloads the policy).
    engine: Arc<crate::control::reload::EngineSlot>,
    shutdown: CancellationToken,
    pods: Arc<dyn PodDirectory>,
    docker: Option<Arc<DockerNames>>,
    /// Budgets, rate limits and approved models (`None`: none configured).
    control: Option<Arc<crate::control::Control>>,
    /// Bytes held for inspection, over all exchanges.
    budget: Arc<ByteBudget>,
    /// Open connections per uid.
    uid_connections: Arc<UidConnections>,
    /// Connections over a cap are closed (fail-closed) rather than relayed.
    fail_closed: bool,
}

impl Intercept {
    /// Builds the handler.
    pub fn new(proxy: &ProxyConfig, upstream: &UpstreamConfig, parts: InterceptParts) -> Self {
        Self {
            names: parts.names,
            server_tls: ServerTls::new(&parts.resolver),
            upstream_tls: parts.upstream_tls,
            pool: Arc::new(Pool::new(
                proxy.pool_max_idle_per_key,
                Duration::from_millis(proxy.pool_idle_timeout_ms),
            )),
            limits: Limits::from_config(proxy, upstream),
            socket_mark: parts.socket_mark,
            rejected: RejectedCerts::new(
                proxy.rejected_cert_capacity,
                Duration::from_secs(proxy.rejected_cert_ttl_s),
            ),
            trust_learning: proxy.trust_learning,
            enforcing: parts.engine.as_ref().is_some_and(|e| {
                e.config.analysis.enabled && rejected::policy_enforces(&e.config.analysis.policy)
            }),
            uninspectable: parts.uninspectable,
            metrics: parts.metrics,
            transport_metrics: parts.transport_metrics,
            recent: parts.recent,
            tee: Arc::new(parts.tee),
            engine: Arc::new(crate::control::reload::EngineSlot::new(parts.engine)),
            shutdown: parts.shutdown,
            pods: Arc::new(NoPodDirectory),
            docker: None,
            control: None,
            budget: ByteBudget::new(proxy.max_buffered_bytes),
            uid_connections: UidConnections::new(proxy.max_connections_per_uid),
            fail_closed: false,
        }
    }

    /// Records a connection that carried no HTTP exchange of its own (relayed, or failed
    /// before HTTP), and closes it in `/status`.
    fn record_without_exchange(
        &self,
        meta: &ConnectionMeta,
        intercepted: bool,
        reason: Option<SpliceReason>,
        bytes_up: u64,
        bytes_down: u64,
        error: Option<String>,
    ) {
        self.recent
            .closed(meta.id, bytes_up, bytes_down, error.clone());
        self.tee
            .emit(meta.exchange_record(intercepted, reason, bytes_up, bytes_down, error));
    }

    /// Connections over a resource cap are closed instead of relayed untouched.
    #[must_use]
    pub fn with_fail_closed(mut self, closed: bool) -> Self {
        self.fail_closed = closed;
        self
    }

    /// The agent-wide inspection byte budget.
    pub fn budget(&self) -> &Arc<ByteBudget> {
        &self.budget
    }

    /// Names pods from `pods` (a Kubernetes API watch) instead of leaving them unnamed.
    #[must_use]
    pub fn with_pod_directory(mut self, pods: Arc<dyn PodDirectory>) -> Self {
        self.pods = pods;
        self
    }

    /// Names Docker containers from the Docker Engine socket.
    #[must_use]
    pub fn with_docker_names(mut self, names: Arc<DockerNames>) -> Self {
        self.docker = Some(names);
        self
    }

    /// Enforces `[[limits]]` and `[[allow]]` on LLM exchanges.
    #[must_use]
    pub fn with_control(mut self, control: Arc<crate::control::Control>) -> Self {
        self.control = Some(control);
        self
    }

    /// The LLM engine in force, for reloads.
    pub fn engine_slot(&self) -> &Arc<crate::control::reload::EngineSlot> {
        &self.engine
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.metrics
    }

    /// The memory of apps that rejected the llmtrace certificate.
    pub fn rejected(&self) -> &RejectedCerts {
        &self.rejected
    }
}

impl ConnectionHandler for Intercept {
    async fn handle(self: Arc<Self>, conn: Accepted) {
        let mut details = ProcessDetails::inspect(conn.redirect.process.pid);
        // A map read: the directory is filled by its own watch task.
        details.resolve_pod(self.pods.as_ref());
        if let Some(names) = &self.docker {
            // Cached after the first connection of a container; bounded by a short timeout.
            details.resolve_container_name(names).await;
        }
        self.recent.opened(&conn, &details);
        let Accepted {
            id,
            mut stream,
            client,
            redirect,
            provider,
            accepted_at,
        } = conn;
        let mut meta = ConnectionMeta {
            id,
            client,
            redirect,
            started: Instant::now(),
            started_at: accepted_at,
            provider: provider.into(),
            details: Arc::new(details),
            sni: None,
        };
        let Some(_uid_slot) = self.uid_connections.enter(meta.redirect.process.uid) else {
            self.over_uid_cap(&meta, stream).await;
            return;
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
                info!(error = %e, "the app's connection failed before its ClientHello");
                self.record_without_exchange(&meta, false, None, 0, 0, Some(e.to_string()));
                return;
            }
        };
        meta.sni = sniffed.hello.as_ref().ok().and_then(|h| h.sni.clone());
        let decision = route::decide(&sniffed.hello, &self.names, |sni| {
            let key = RejectKey::new(meta.redirect.process.uid, meta.who(), sni);
            self.rejected.contains(&key, Instant::now())
        });
        match decision {
            Decision::Splice(reason)
                if reason.is_uninspectable()
                    && self.uninspectable == route::Uninspectable::Close =>
            {
                self.metrics.connection(Routed::Close(reason));
                warn!(
                    reason = reason.as_str(),
                    sni = meta.sni.as_deref(),
                    "closed a provider connection that cannot be inspected (uninspectable = \"close\")"
                );
                let error = format!("closed: cannot be inspected ({})", reason.as_str());
                self.record_without_exchange(&meta, false, Some(reason), 0, 0, Some(error));
            }
            Decision::Splice(reason) => {
                let reason = reason.under_policy(self.enforcing);
                self.metrics.connection(Routed::Splice(reason));
                if reason == SpliceReason::RejectedCertificateUnenforced {
                    warn!(
                        sni = meta.sni.as_deref(),
                        exe = meta.who(),
                        uid = meta.redirect.process.uid,
                        "relaying untouched an app that rejected the llmtrace certificate: the policy is not enforced on this connection"
                    );
                }
                if let SpliceReason::NotHello(why) = reason {
                    info!(
                        reason = why.as_str(),
                        "no usable TLS ClientHello; relaying untouched"
                    );
                }
                splice::relay(&self, &meta, stream, sniffed.buffered, reason).await;
            }
            Decision::Mitm { sni, protocols } => {
                self.metrics.connection(Routed::Mitm);
                let stream = Prefixed::new(sniffed.buffered, ReadAhead::on_demand(stream));
                self.mitm(&meta, stream, sni, protocols).await;
            }
        }
    }
}

impl Intercept {
    /// A connection of a uid at its cap: never waits for a slot, follows the fail mode.
    async fn over_uid_cap(&self, meta: &ConnectionMeta, stream: tokio::net::TcpStream) {
        let reason = SpliceReason::UidConnectionCap;
        warn!(
            uid = meta.redirect.process.uid,
            fail_closed = self.fail_closed,
            "this uid has [proxy] max_connections_per_uid connections open; not intercepting this one"
        );
        if self.fail_closed {
            self.metrics.connection(Routed::Close(reason));
            let error = format!("closed: {}", reason.as_str());
            self.record_without_exchange(meta, false, Some(reason), 0, 0, Some(error));
        } else {
            self.metrics.connection(Routed::Splice(reason));
            splice::relay(self, meta, stream, Vec::new(), reason).await;
        }
    }
}
