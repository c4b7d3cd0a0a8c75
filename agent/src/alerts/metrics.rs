//! Metrics of the alert pipeline. The `sink` and `rule` label values are names from the
//! configuration, so their number is bounded by it.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// A `sink` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    /// Configured sink name.
    pub sink: String,
}

/// A `rule` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    /// Configured rule name.
    pub rule: String,
}

/// Counters of the alert pipeline; cheap to clone (shared atomics).
#[derive(Debug, Clone, Default)]
pub struct AlertMetrics {
    /// Alerts a sink delivered.
    pub sent: Family<SinkLabel, Counter>,
    /// Alerts a sink gave up on after its retries.
    pub failed: Family<SinkLabel, Counter>,
    /// Delivery attempts that failed and were retried.
    pub retries: Family<SinkLabel, Counter>,
    /// Alerts dropped because the sink's queue was full.
    pub dropped: Family<SinkLabel, Counter>,
    /// Events a rule matched but folded into a later alert (same key within the window).
    pub deduplicated: Family<RuleLabel, Counter>,
    /// Events dropped because the rules task was behind.
    pub events_dropped: Counter,
}

impl AlertMetrics {
    /// Creates the metrics and registers them as `llmtrace_alerts_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("alerts");
        r.register("sent", "Alerts delivered, by sink", m.sent.clone());
        r.register(
            "failed",
            "Alerts a sink gave up on after its retries, by sink",
            m.failed.clone(),
        );
        r.register(
            "retries",
            "Alert delivery attempts that failed and were retried, by sink",
            m.retries.clone(),
        );
        r.register(
            "dropped",
            "Alerts dropped because the sink's queue was full, by sink",
            m.dropped.clone(),
        );
        r.register(
            "deduplicated",
            "Events folded into a later alert of the same key, by rule",
            m.deduplicated.clone(),
        );
        r.register(
            "events_dropped",
            "Events dropped because the alert rules were behind",
            m.events_dropped.clone(),
        );
        m
    }

    /// The `sink` label set.
    pub fn sink(name: &str) -> SinkLabel {
        SinkLabel { sink: name.into() }
    }
}
