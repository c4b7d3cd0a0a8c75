//! Building the [`Intercept`] handler from the configuration (used by `app`).

use std::sync::Arc;

use llmtrace_ca::{
    CaError, CaOptions, CertificateAuthority, LeafCache, LeafCacheConfig, SniResolver,
};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    Intercept, InterceptParts,
    hook::NoHook,
    metrics::ProxyMetrics,
    record::{ExchangeRecord, RecordTee},
    route::InterceptNames,
};
use crate::{
    admin::{metrics::TransportMetrics, status::RecentConnections},
    config::{Config, ProviderSpec},
    tls::{UpstreamTls, upstream::RootsError},
};

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("local CA in {dir}: {source}")]
    Ca { dir: String, source: CaError },
    #[error("upstream.extra_root_certs: {0}")]
    Roots(#[from] RootsError),
}

/// The handler and the receiving end of its exchange records.
#[derive(Debug)]
pub struct Built {
    /// The connection handler.
    pub handler: Arc<Intercept>,
    /// Exchange records (one per exchange and per relayed connection).
    pub records: mpsc::Receiver<ExchangeRecord>,
    /// The CA whose leaves apps see.
    pub ca: Arc<CertificateAuthority>,
}

/// Loads (or creates) the CA in `state_dir/ca`, the upstream trust store, and the handler.
/// Provider names the CA's name constraints do not cover are reported and relayed untouched.
pub fn from_config(
    config: &Config,
    providers: &[ProviderSpec],
    registry: &mut Registry,
    transport_metrics: Arc<TransportMetrics>,
    recent: Arc<RecentConnections>,
    shutdown: CancellationToken,
) -> Result<Built, BuildError> {
    let hosts: Vec<String> = providers.iter().map(|p| p.host.clone()).collect();
    let dir = config.state_dir.join("ca");
    let options = CaOptions {
        intercept_hosts: hosts.clone(),
        name_constraints: true,
    };
    let ca =
        CertificateAuthority::load_or_init(&dir, &options).map_err(|source| BuildError::Ca {
            dir: dir.display().to_string(),
            source,
        })?;
    let ca = Arc::new(ca);
    let uncovered = ca.uncovered(&hosts);
    if !uncovered.is_empty() {
        warn!(
            hosts = ?uncovered,
            "the local CA's name constraints do not cover these provider names; their connections are relayed untouched (run `llmtrace ca rotate` and reinstall the CA to intercept them)"
        );
    }
    let covered: Vec<&str> = hosts
        .iter()
        .map(String::as_str)
        .filter(|h| !uncovered.contains(h))
        .collect();
    let cache = Arc::new(LeafCache::new(ca.clone(), LeafCacheConfig::default()));
    let upstream_tls = UpstreamTls::new(true, &config.upstream.extra_root_certs)?;
    let metrics = Arc::new(ProxyMetrics::register(registry));
    let (tee, records) = RecordTee::channel(config.proxy.record_channel_capacity, metrics.clone());
    let handler = Intercept::new(
        &config.proxy,
        &config.upstream,
        InterceptParts {
            names: InterceptNames::new(&covered),
            resolver: Arc::new(SniResolver::new(cache)),
            upstream_tls,
            socket_mark: config.intercept.socket_mark,
            metrics,
            transport_metrics,
            recent,
            tee,
            hook: Arc::new(NoHook),
            shutdown,
        },
    );
    info!(ca = %ca.paths().cert.display(), names = covered.len(), "TLS interception is on");
    Ok(Built {
        handler: Arc::new(handler),
        records,
        ca,
    })
}

/// Consumes exchange records by logging them, until storage consumes them instead.
pub async fn log_records(mut records: mpsc::Receiver<ExchangeRecord>) {
    while let Some(r) = records.recv().await {
        debug!(
            conn = r.connection_id,
            seq = r.exchange_seq,
            sni = r.sni.as_deref(),
            method = r.method.as_deref(),
            path = r.path.as_deref(),
            status = r.status,
            bytes_up = r.bytes_up,
            bytes_down = r.bytes_down,
            duration_us = r.duration_us,
            intercepted = r.intercepted,
            reason = r.not_intercepted_reason,
            error = r.error.as_deref(),
            "exchange"
        );
    }
}
