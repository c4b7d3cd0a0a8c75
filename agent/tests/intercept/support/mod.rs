//! In-process harness: a fake provider, the real `Intercept` handler behind the real
//! `Acceptor` (with a fixed original destination instead of the kernel), and curl.

pub mod certs;
pub mod client;
pub mod curl;
pub mod llm;
pub mod upstream;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use llmtrace_agent::{
    config::{Config, ProviderSpec, ProxyConfig},
    llm::LlmConfig,
    proxy::{self, Intercept, metrics::ProxyMetrics, record::ExchangeRecord},
    transport::{FixedOriginalDst, ProcessInfo, Redirect, listener, metrics::TransportMetrics},
};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::Semaphore, sync::mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use self::{
    certs::{BySni, TestCa},
    upstream::FakeUpstream,
};

/// The intercepted name in tests (plus `bad.provider.test`, whose provider certificate
/// comes from an untrusted CA).
pub const NAME: &str = "api.provider.test";
pub const BAD_NAME: &str = "bad.provider.test";
/// A name the proxy does not intercept.
pub const OTHER_NAME: &str = "other.provider.test";

/// Everything one test needs.
pub struct World {
    pub upstream: FakeUpstream,
    pub upstream_ca_pem: PathBuf,
    pub llmtrace_ca_pem: PathBuf,
    pub proxy_addr: SocketAddr,
    pub handler: Arc<Intercept>,
    pub metrics: Arc<ProxyMetrics>,
    pub transport: Arc<TransportMetrics>,
    pub registry: Registry,
    pub records: mpsc::Receiver<ExchangeRecord>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn start() -> Self {
        Self::with(ProxyConfig::default()).await
    }

    pub async fn with(proxy_config: ProxyConfig) -> Self {
        Self::with_llm(proxy_config, LlmConfig::default()).await
    }

    /// With the given analysis settings.
    pub async fn with_llm(proxy_config: ProxyConfig, llm: LlmConfig) -> Self {
        Self::with_config(proxy_config, llm, |_| {}).await
    }

    /// With the given settings, and `tweak` applied to the rest of the configuration.
    pub async fn with_config(
        proxy_config: ProxyConfig,
        llm: LlmConfig,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let good_ca = TestCa::new("fake provider CA");
        let untrusted_ca = TestCa::new("untrusted CA");
        let upstream_ca_pem = dir.path().join("upstream-ca.pem");
        good_ca.write_pem(&upstream_ca_pem);
        let resolver = Arc::new(BySni {
            good: good_ca.leaf(&[NAME, OTHER_NAME]),
            bad: untrusted_ca.leaf(&[BAD_NAME]),
        });
        let upstream = FakeUpstream::start("127.0.0.3", resolver).await;

        let mut config = Config {
            state_dir: dir.path().join("state"),
            proxy: proxy_config,
            llm,
            ..Config::default()
        };
        config.upstream.extra_root_certs = vec![upstream_ca_pem.clone()];
        tweak(&mut config);
        let providers: Vec<ProviderSpec> = [NAME, BAD_NAME]
            .iter()
            .map(|h| ProviderSpec {
                name: "test".into(),
                host: (*h).into(),
                port: 443,
                addresses: None,
            })
            .collect();
        let mut registry = Registry::default();
        let transport = Arc::new(TransportMetrics::register(&mut registry));
        let shutdown = CancellationToken::new();
        let built =
            proxy::build::from_config(&config, &providers, &mut registry, &transport, &shutdown)
                .unwrap();
        let llmtrace_ca_pem = built.ca.paths().cert.clone();
        let handler = built.handler;
        let metrics = handler.metrics().clone();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let acceptor = Arc::new(listener::Acceptor {
            orig_dst: Arc::new(FixedOriginalDst {
                redirect: Redirect {
                    orig_dst: upstream.addr,
                    provider_index: 0,
                    process: ProcessInfo {
                        pid: std::process::id(),
                        tid: std::process::id(),
                        uid: 0,
                        gid: 0,
                        comm: "intercept-test".into(),
                        cgroup_id: 0,
                        netns_cookie: 0,
                    },
                },
            }),
            handler: handler.clone(),
            provider_names: Arc::new(vec!["test".into()]),
            metrics: transport.clone(),
            limit: Arc::new(Semaphore::new(config.proxy.max_connections)),
            next_id: AtomicU64::new(1),
            // Two, as on a small host: connections and the pool are spread over both.
            workers: llmtrace_agent::transport::workers::Workers::start(2).unwrap(),
        });
        let tasks = TaskTracker::new();
        tokio::spawn(acceptor.run(listener, shutdown.clone(), tasks.clone()));
        Self {
            upstream,
            upstream_ca_pem,
            llmtrace_ca_pem,
            proxy_addr,
            handler,
            metrics,
            transport,
            registry,
            records: built.records.into_channel(4096),
            shutdown,
            tasks,
            dir,
        }
    }

    /// `host:port:127.0.0.1` for curl's `--resolve`, to reach the proxy as `name`.
    pub fn resolve_proxy(&self, name: &str) -> String {
        format!("{name}:{}:127.0.0.1", self.proxy_addr.port())
    }

    /// `host:port:ip` for curl's `--resolve`, to reach the provider directly as `name`.
    pub fn resolve_direct(&self, name: &str) -> String {
        format!(
            "{name}:{}:{}",
            self.upstream.addr.port(),
            self.upstream.addr.ip()
        )
    }

    /// Waits (bounded) until no redirected connection is being served.
    pub async fn wait_for_no_active_connections(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.transport.active.get() != 0 {
            assert!(
                Instant::now() < deadline,
                "{} connections still active",
                self.transport.active.get()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until `cond` holds: the proxy finishes a connection after the client
    /// process has already exited.
    pub async fn eventually(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The metrics as the admin endpoint would serve them.
    pub fn metrics_text(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }

    /// Every record emitted so far. Records reach the channel through the analysis pool, a
    /// moment after their connection closed, so this takes them until none has arrived for a
    /// quiet interval (bounded).
    pub async fn drain_records(&mut self) -> Vec<ExchangeRecord> {
        const QUIET: Duration = Duration::from_millis(250);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while Instant::now() < deadline {
            match tokio::time::timeout(QUIET, self.records.recv()).await {
                Ok(Some(r)) => out.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        out
    }
}
