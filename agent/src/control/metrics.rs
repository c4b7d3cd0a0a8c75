//! Metrics of the control rules, labelled by rule name (chosen by the operator, never taken
//! from traffic; group keys stay out of labels).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// `rule`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

/// `rule` and `kind` (a finding kind or a level name from a fixed list).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleKindLabels {
    pub rule: String,
    pub kind: &'static str,
}

/// Counters and gauges of `[[limits]]` and `[[allow]]`.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// USD counted against each limit (over all groups and windows).
    pub spent_usd: Family<RuleLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Largest spend of any group of a limit in its current window.
    pub window_spend_max_usd: Family<RuleLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Counter groups kept per limit.
    pub groups: Family<RuleLabel, Gauge>,
    /// Requests refused, by rule and finding kind.
    pub refusals: Family<RuleKindLabels, Counter>,
    /// Threshold crossings, by rule and level (`soft`, `hard_80`, `hard`).
    pub crossings: Family<RuleKindLabels, Counter>,
    /// Requests no `[[allow]]` rule approved, by rule and action (`flag`, `block`).
    pub unapproved: Family<RuleKindLabels, Counter>,
    /// Events dropped because their consumer was behind.
    pub events_dropped: Counter,
    /// Reloads, by outcome (`ok`, `rejected`).
    pub reloads: Family<RuleKindLabels, Counter>,
    /// State file writes that failed.
    pub state_write_errors: Counter,
    /// Relayed connections to unconfigured names that look like LLM APIs (shadow AI).
    pub shadow_ai_connections: Counter,
    /// Provider connects refused in the kernel (`at_connect`), by rule.
    pub connect_refusals: Family<RuleLabel, Counter>,
    /// (cgroup, provider) pairs the kernel refuses now.
    pub connect_deny_entries: Gauge,
    /// Pod and container cgroups seen by the last scan.
    pub connect_cgroups: Gauge,
    /// Refusal events not turned into rows because too many (cgroup, provider, process)
    /// windows were open at once (counted in `connect_refusals` all the same).
    pub connect_refusal_rows_dropped: Counter,
}

impl ControlMetrics {
    /// Registers the metrics under `llmtrace_control_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("control");
        r.register(
            "spent_usd",
            "USD counted against each limit",
            m.spent_usd.clone(),
        );
        r.register(
            "window_spend_max_usd",
            "Largest spend of a group of the limit in its current window",
            m.window_spend_max_usd.clone(),
        );
        r.register("groups", "Counter groups kept per limit", m.groups.clone());
        r.register(
            "refusals",
            "Requests refused by a control rule",
            m.refusals.clone(),
        );
        r.register(
            "crossings",
            "Budget threshold crossings",
            m.crossings.clone(),
        );
        r.register(
            "unapproved",
            "Requests no allow rule approved",
            m.unapproved.clone(),
        );
        r.register(
            "events_dropped",
            "Control events dropped because their consumer was behind",
            m.events_dropped.clone(),
        );
        r.register(
            "reloads",
            "Configuration reloads by outcome",
            m.reloads.clone(),
        );
        r.register(
            "state_write_errors",
            "Failed writes of the control state file",
            m.state_write_errors.clone(),
        );
        r.register(
            "shadow_ai_connections",
            "Relayed connections to unconfigured names that look like LLM APIs",
            m.shadow_ai_connections.clone(),
        );
        r.register(
            "connect_refusals",
            "Provider connects refused in the kernel by an allow rule (at_connect)",
            m.connect_refusals.clone(),
        );
        r.register(
            "connect_deny_entries",
            "Cgroup and provider pairs refused at connect",
            m.connect_deny_entries.clone(),
        );
        r.register(
            "connect_cgroups",
            "Pod and container cgroups known to the at_connect scan",
            m.connect_cgroups.clone(),
        );
        r.register(
            "connect_refusal_rows_dropped",
            "Connect refusals not written as rows (too many open rate windows)",
            m.connect_refusal_rows_dropped.clone(),
        );
        m
    }
}
