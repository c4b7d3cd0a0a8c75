//! `[[anomalies]]`: which traffic gets baselines, per which identity group, and when a
//! deviation is a finding.

use serde::{Deserialize, Serialize};

use crate::{
    analysis::Severity,
    control::{GroupBy, Selector},
};

/// A baseline kept per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// USD per hour, from the cost of the exchanges in each bucket → `anomaly.cost_spike`.
    CostPerHour,
    /// Input + output tokens of one exchange → `anomaly.token_spike`.
    TokensPerRequest,
    /// Exchanges per minute, from each bucket → `anomaly.request_rate`.
    RequestsPerMinute,
    /// Share of exchanges with an error or a status ≥ 400 per bucket → `anomaly.error_rate`.
    ErrorRate,
    /// Duration of one exchange in ms → `anomaly.latency`.
    Latency,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Self; 5] = [
        Self::CostPerHour,
        Self::TokensPerRequest,
        Self::RequestsPerMinute,
        Self::ErrorRate,
        Self::Latency,
    ];

    /// The finding kind of a deviation.
    pub fn kind(self) -> &'static str {
        match self {
            Self::CostPerHour => "anomaly.cost_spike",
            Self::TokensPerRequest => "anomaly.token_spike",
            Self::RequestsPerMinute => "anomaly.request_rate",
            Self::ErrorRate => "anomaly.error_rate",
            Self::Latency => "anomaly.latency",
        }
    }

    /// The metric's name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CostPerHour => "cost_per_hour",
            Self::TokensPerRequest => "tokens_per_request",
            Self::RequestsPerMinute => "requests_per_minute",
            Self::ErrorRate => "error_rate",
            Self::Latency => "latency",
        }
    }

    /// Measured per time bucket (else per exchange).
    pub fn bucketed(self) -> bool {
        matches!(
            self,
            Self::CostPerHour | Self::RequestsPerMinute | Self::ErrorRate
        )
    }
}

/// One `[[anomalies]]` rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyRule {
    /// Name, shown in the finding's excerpt.
    pub name: String,
    /// Only exchanges whose caller matches (every given field; exact or glob). Default: all.
    #[serde(default, rename = "match")]
    pub selector: Selector,
    /// Identity fields a baseline is kept per (e.g. `["k8s_workload"]`); empty: one baseline.
    #[serde(default)]
    pub group_by: GroupBy,
    /// Metrics watched. Default: all five.
    #[serde(default = "all_metrics")]
    pub metrics: Vec<Metric>,
    /// A value this many deviations above its baseline is an anomaly.
    #[serde(default = "default_z")]
    pub z_score: f64,
    /// Samples (exchanges, or buckets for per-bucket metrics) a baseline needs before it
    /// judges anything.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Samples after which a sample's weight in the baseline has halved.
    #[serde(default = "default_half_life")]
    pub half_life: u32,
    /// Length of a bucket for cost, request rate and error rate, in seconds.
    #[serde(default = "default_bucket_secs")]
    pub bucket_secs: u64,
    /// Exchanges a bucket needs before its error rate is judged.
    #[serde(default = "default_min_bucket_requests")]
    pub min_bucket_requests: u64,
    /// Severity of the findings.
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Groups remembered; beyond it the longest-idle group is forgotten. Also bounds the
    /// groups this rule keeps blocked.
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    /// How long a group stays blocked when the analysis policy resolves one of this rule's
    /// findings to `block`, in seconds from the finding.
    #[serde(default = "default_block_secs")]
    pub block_secs: u64,
}

/// Longest block: a month. Beyond it a block is a ban, which belongs in `[[allow]]`.
pub const MAX_BLOCK_SECS: u64 = 30 * 86_400;

fn all_metrics() -> Vec<Metric> {
    Metric::ALL.to_vec()
}
fn default_z() -> f64 {
    4.0
}
fn default_min_samples() -> u64 {
    30
}
fn default_half_life() -> u32 {
    60
}
fn default_bucket_secs() -> u64 {
    60
}
fn default_min_bucket_requests() -> u64 {
    20
}
fn default_severity() -> Severity {
    Severity::Medium
}
fn default_max_groups() -> usize {
    10_000
}
fn default_block_secs() -> u64 {
    600
}

impl AnomalyRule {
    /// Checks the rule; `key` is e.g. `anomalies[0]`. Returns the bad key and the problem.
    pub fn validate(&self, key: &str) -> Result<(), (String, String)> {
        let bad = |k: &str, p: &str| Err((format!("{key}.{k}"), p.to_owned()));
        if self.name.is_empty() {
            return bad("name", "must not be empty");
        }
        if let Err(e) = self.group_by.validate() {
            return bad("group_by", &e);
        }
        if self.metrics.is_empty() {
            return bad("metrics", "must name at least one metric");
        }
        if !(self.z_score.is_finite() && self.z_score > 0.0) {
            return bad("z_score", "must be a positive number");
        }
        if self.min_samples < 2 {
            return bad("min_samples", "must be at least 2");
        }
        if self.half_life == 0 {
            return bad("half_life", "must be at least 1");
        }
        if self.bucket_secs == 0 {
            return bad("bucket_secs", "must be at least 1");
        }
        if self.max_groups == 0 {
            return bad("max_groups", "must be at least 1");
        }
        if !(1..=MAX_BLOCK_SECS).contains(&self.block_secs) {
            return bad("block_secs", "must be between 1 and 2592000 (30 days)");
        }
        Ok(())
    }
}
