//! Connection-level metrics of redirected connections (redirected, unattributed, rejected,
//! active, upstream connect errors, relayed bytes), registered once at startup. Labels are
//! bounded: provider names come from the configured provider list, never from traffic.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// The `provider` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    /// Provider name from the provider list.
    pub provider: String,
}

/// Counters and gauges of redirected connections.
#[derive(Debug, Default)]
pub struct TransportMetrics {
    redirected: Family<ProviderLabel, Counter>,
    /// Connections accepted without a kernel record (closed).
    pub unattributed: Counter,
    /// Connections closed at accept because the connection limit was reached.
    pub rejected_over_limit: Counter,
    /// Connections being served.
    pub active: Gauge,
    /// Failed connects to original destinations.
    pub upstream_connect_errors: Counter,
    /// Bytes relayed from apps to destinations.
    pub bytes_up: Counter,
    /// Bytes relayed from destinations to apps.
    pub bytes_down: Counter,
}

impl TransportMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "redirected_connections",
            "Connections redirected to the agent by the kernel hook",
            m.redirected.clone(),
        );
        registry.register(
            "unattributed_connections",
            "Connections accepted without a redirect record, closed",
            m.unattributed.clone(),
        );
        registry.register(
            "rejected_connections",
            "Connections closed at accept because the connection limit was reached",
            m.rejected_over_limit.clone(),
        );
        registry.register(
            "active_connections",
            "Connections being served",
            m.active.clone(),
        );
        registry.register(
            "upstream_connect_errors",
            "Failed connections to original destinations",
            m.upstream_connect_errors.clone(),
        );
        registry.register(
            "relayed_bytes_up",
            "Bytes relayed from apps to providers",
            m.bytes_up.clone(),
        );
        registry.register(
            "relayed_bytes_down",
            "Bytes relayed from providers to apps",
            m.bytes_down.clone(),
        );
        m
    }

    /// Counts a redirected connection for `provider`.
    pub fn redirected(&self, provider: &str) {
        self.redirected
            .get_or_create(&ProviderLabel {
                provider: provider.to_owned(),
            })
            .inc();
    }
}
