//! Metrics of the per-namespace listeners.

use prometheus_client::{
    metrics::{
        counter::Counter,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Namespaces served, set up, released, and how long a new one took to become ready.
#[derive(Debug)]
pub struct NetnsMetrics {
    /// Namespaces with an agent listener now.
    pub served: Gauge,
    /// Namespaces that got a listener.
    pub ready: Counter,
    /// Namespaces released because their processes were gone.
    pub released: Counter,
    /// Failed attempts to open a listener in a namespace.
    pub setup_failures: Counter,
    /// Seconds from the first provider connect in an unknown namespace to its listener.
    pub time_to_ready: Histogram,
}

impl NetnsMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            served: Gauge::default(),
            ready: Counter::default(),
            released: Counter::default(),
            setup_failures: Counter::default(),
            // 0.5 ms … ~16 s.
            time_to_ready: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        };
        registry.register(
            "netns_served",
            "Network namespaces the agent has a listener in",
            m.served.clone(),
        );
        registry.register(
            "netns_ready",
            "Network namespaces that got an agent listener",
            m.ready.clone(),
        );
        registry.register(
            "netns_released",
            "Network namespaces released because their processes were gone",
            m.released.clone(),
        );
        registry.register(
            "netns_setup_failures",
            "Failed attempts to open a listener in a network namespace",
            m.setup_failures.clone(),
        );
        registry.register(
            "netns_time_to_ready_seconds",
            "Time from the first provider connect in an unknown namespace to its listener",
            m.time_to_ready.clone(),
        );
        m
    }
}
