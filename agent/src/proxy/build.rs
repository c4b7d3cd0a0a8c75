//! Building the [`Intercept`] handler from the configuration (used by `app`).

use std::sync::Arc;

use llmtrace_ca::{
    CaError, CaOptions, CertificateAuthority, LeafCache, LeafCacheConfig, SniResolver,
};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    Intercept, InterceptParts,
    keyfile::{self, KeyError},
    metrics::ProxyMetrics,
    record::{RecordTee, Records, TeeLimits},
    route::InterceptNames,
};
use crate::{
    admin::status::RecentConnections,
    config::{Config, ProviderSpec},
    llm::Engine,
    tls::{UpstreamTls, upstream::RootsError},
    trace::Fleet,
    transport::metrics::TransportMetrics,
};

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("local CA in {dir}: {source}")]
    Ca { dir: String, source: CaError },
    #[error("upstream.extra_root_certs: {0}")]
    Roots(#[from] RootsError),
    #[error("API key fingerprint key: {0}")]
    FingerprintKey(#[from] KeyError),
    #[error(transparent)]
    Kubernetes(#[from] crate::kube::KubeError),
    #[error("control rules: {0}")]
    Control(String),
}

/// The handler and the receiving end of its exchange records.
#[derive(Debug)]
pub struct Built {
    /// The connection handler.
    pub handler: Arc<Intercept>,
    /// Exchange records (one per exchange and per relayed connection).
    pub records: Records,
    /// The CA whose leaves apps see.
    pub ca: Arc<CertificateAuthority>,
    /// Recent connections, for `/status`.
    pub recent: Arc<RecentConnections>,
    /// Limits and approvals (reloaded on SIGHUP).
    pub control: Arc<crate::control::Control>,
    /// Their events (budget crossings, refusals), for [`crate::control::events::deliver`].
    pub control_events: mpsc::Receiver<crate::control::ControlEvent>,
    /// Pod names (also for `at_connect`).
    pub pods: Arc<dyn crate::identity::PodDirectory>,
    /// Docker container names (also for `at_connect`).
    pub docker: Arc<crate::identity::DockerNames>,
}

/// Loads (or creates) the CA (`ca.dir`, default `state_dir/ca`), the upstream trust store,
/// and the handler.
/// Provider names the CA's name constraints do not cover are reported and relayed untouched.
pub fn from_config(
    config: &Config,
    providers: &[ProviderSpec],
    registry: &mut Registry,
    transport_metrics: &Arc<TransportMetrics>,
    shutdown: &CancellationToken,
) -> Result<Built, BuildError> {
    let recent = Arc::new(RecentConnections::new(config.admin.recent_connections));
    let hosts: Vec<String> = providers.iter().map(|p| p.host.clone()).collect();
    let dir = config.ca_dir();
    let options = CaOptions {
        intercept_hosts: hosts.clone(),
        name_constraints: config.ca.name_constraints,
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
    let engine = Engine::new(
        config.llm.clone(),
        &keyfile::load(
            config.llm.fingerprint_key_file.as_deref(),
            &config.state_dir,
        )?,
    );
    let p = &config.proxy;
    let limits = TeeLimits {
        capacity: p.record_channel_capacity,
        analysis_queue: p.analysis_queue,
        analysis_queue_bytes: p.analysis_queue_bytes,
        workers: p.analysis_workers,
        nice: p.analysis_nice,
        spool_before_end: (p.spool_before_end_ms > 0)
            .then(|| std::time::Duration::from_millis(p.spool_before_end_ms)),
    };
    let (tee, records) = RecordTee::channel(limits, metrics.clone());
    let pods = crate::kube::start(&config.kubernetes, registry, shutdown)?;
    let (control, control_events) = control(config, registry)?;
    let docker = Arc::new(crate::identity::DockerNames::new(
        crate::identity::DOCKER_SOCKET,
        std::time::Duration::from_millis(250),
    ));
    let handler = Intercept::new(
        &config.proxy,
        &config.upstream,
        InterceptParts {
            names: InterceptNames::new(&covered),
            resolver: Arc::new(SniResolver::new(cache)),
            upstream_tls,
            socket_mark: config.intercept.socket_mark,
            metrics,
            transport_metrics: transport_metrics.clone(),
            recent: recent.clone(),
            tee,
            engine: Some(engine.clone()),
            shutdown: shutdown.clone(),
            uninspectable: config.intercept.uninspectable,
        },
    )
    .with_pod_directory(pods.clone())
    .with_control(control.clone())
    .with_fail_closed(config.intercept.fail_mode == crate::config::FailMode::Closed)
    .with_docker_names(docker.clone());
    info!(ca = %ca.paths().cert.display(), names = covered.len(), "TLS interception is on");
    Ok(Built {
        handler: Arc::new(handler),
        records: records
            .with_control(control.clone())
            .with_cmdline_masking(engine),
        ca,
        recent,
        control,
        control_events,
        pods,
        docker,
    })
}

/// The control rules, with budget spend restored from the state file (an unreadable file is
/// logged and ignored: spend starts over rather than the agent not starting).
fn control(
    config: &Config,
    registry: &mut Registry,
) -> Result<
    (
        Arc<crate::control::Control>,
        mpsc::Receiver<crate::control::ControlEvent>,
    ),
    BuildError,
> {
    use crate::control::{Control, EventSink, metrics::ControlMetrics, state};
    let rules = config.control_rules();
    let path = rules
        .control
        .state_file
        .clone()
        .unwrap_or_else(|| config.state_dir.join("control-state.json"));
    let snapshot = state::load(&path).unwrap_or_else(|e| {
        warn!(error = %e, "control state file unreadable; budget spend starts over");
        None
    });
    let (events, rx) = EventSink::channel(1024);
    let node = Fleet::detect(&config.sink.cluster_label).node;
    let metrics = Arc::new(ControlMetrics::register(registry));
    info!(
        limits = rules.limits.len(),
        allow = rules.allow.len(),
        "control rules loaded"
    );
    let control = Control::new(&node, &config.state_dir, rules, snapshot, metrics, events)
        .map_err(BuildError::Control)?;
    // Blocks restored from the state file stay for the anomaly rules that are unchanged.
    control.configure_anomalies(&config.anomalies);
    registry.sub_registry_with_prefix("anomaly").register(
        "blocked_groups",
        "Groups blocked after an anomaly the analysis policy blocks",
        control.quarantine().gauge(),
    );
    Ok((Arc::new(control), rx))
}
