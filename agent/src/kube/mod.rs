//! Pod names from the Kubernetes API: a list + watch of the pods scheduled on this node, kept
//! in memory so the data path resolves a pod UID with a map read, never a network call.
//!
//! The client is a small one on the workspace's hyper + rustls (ring) rather than kube-rs: the
//! agent needs one resource (pods), one verb pair (list, watch) and bearer-token auth, and
//! kube-rs would bring `k8s-openapi` (every API type of every group, minutes of compile time on
//! each build), tower and a second TLS stack configuration to keep on the ring provider, for
//! no behaviour the agent uses. Pods are decoded into the few fields the agent reads.
//!
//! Needs RBAC `get`, `list`, `watch` on pods only (`deploy/kubernetes/rbac.yaml`): workloads
//! are resolved from the pod's owner reference and labels, see [`pod`].

mod client;
pub mod config;
mod directory;
pub mod pod;
mod watch;

use std::sync::Arc;

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use self::{
    client::ClientError,
    config::{Enabled, KubernetesConfig, SettingsError},
    directory::KubeDirectory,
};
use crate::identity::{NoPodDirectory, PodDirectory};

/// Why the watcher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubernetes: {0}")]
    Settings(#[from] SettingsError),
    #[error("kubernetes: {0}")]
    Client(#[from] ClientError),
}

/// Starts the pod watch when `[kubernetes]` asks for it (registering its metrics) and returns
/// the directory the data path reads; [`NoPodDirectory`] when off.
pub fn start(
    config: &KubernetesConfig,
    registry: &mut Registry,
    shutdown: &CancellationToken,
) -> Result<Arc<dyn PodDirectory>, KubeError> {
    let Some(endpoint) = config.endpoint(|k| std::env::var(k).ok())? else {
        return Ok(Arc::new(NoPodDirectory));
    };
    let client =
        client::ApiClient::new(endpoint.clone(), &config.ca_file, config.token_file.clone())?;
    let node = if config.node_name.is_empty() {
        crate::trace::Fleet::detect("").node
    } else {
        config.node_name.clone()
    };
    let known = Gauge::default();
    let restarts = Counter::default();
    registry.register(
        "kubernetes_pods",
        "Pods of this node known from the Kubernetes API",
        known.clone(),
    );
    registry.register(
        "kubernetes_watch_restarts",
        "Restarts of the Kubernetes pod watch (ended, failed or expired)",
        restarts.clone(),
    );
    let directory = Arc::new(KubeDirectory::new(known));
    info!(api_server = %format!("{}:{}", endpoint.host, endpoint.port), node, "watching this node's pods for pod names");
    let watch = watch::PodWatch {
        client,
        node,
        directory: directory.clone(),
        restarts,
    };
    tokio::spawn(watch.run(shutdown.clone()));
    Ok(directory)
}
