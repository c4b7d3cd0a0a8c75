//! Anomaly detection: per identity group (a rule's `group_by`), rolling baselines of cost per
//! hour, tokens per request, requests per minute, error rate and latency. A value more than
//! `z_score` deviations above a baseline with at least `min_samples` samples is a finding
//! (`anomaly.cost_spike`, `anomaly.token_spike`, `anomaly.request_rate`, `anomaly.error_rate`,
//! `anomaly.latency`) on the trace row that revealed it, stored and alerted like any other.
//! Only increases are anomalies: less traffic, cost or latency is not a threat.
//!
//! Time is the rows' end time, so detection is deterministic for a given sequence of rows.
//!
//! Each finding raised is also returned as a [`Raised`], for the analysis policy to act on
//! ([`enforce`]): a `block` blocks the rule's group at the control gate for `block_secs`.

pub mod config;
pub mod enforce;
mod ewma;
mod group;

use std::collections::HashMap;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

pub use self::config::{AnomalyRule, Metric};
use self::group::{Deviation, Group, Sample};
use crate::{
    alerts::{Identity, rules::severity_name},
    sink::{TraceRow, row},
};

/// Where anomaly findings are located: the traffic, not a part of one exchange.
pub const LOCATION: &str = "exchange";

/// The finding kind of a request refused because its group is blocked after an anomaly.
pub const BLOCKED: &str = "anomaly.blocked";

/// An anomaly finding just added to a row, with what the policy needs to act on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    /// The rule that raised it (as configured when it did).
    pub rule: AnomalyRule,
    /// Its group: the rule's `group_by` key of the caller (empty: the rule's one group).
    pub group: String,
    /// `anomaly.cost_spike`, ...
    pub kind: &'static str,
    /// Index of the finding in the row's `findings`.
    pub finding: usize,
}

/// A `kind` label: one of the fixed anomaly finding kinds.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `anomaly.cost_spike`, ...
    pub kind: &'static str,
}

/// Anomaly findings by kind, as `llmtrace_anomaly_findings_total{kind}`.
#[derive(Debug, Clone, Default)]
pub struct AnomalyMetrics {
    /// Findings raised.
    pub findings: Family<KindLabel, Counter>,
}

impl AnomalyMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.sub_registry_with_prefix("anomaly").register(
            "findings",
            "Anomaly findings by kind",
            m.findings.clone(),
        );
        m
    }
}

/// Every rule's groups.
#[derive(Debug, Default)]
pub struct Anomalies {
    rules: Vec<(AnomalyRule, HashMap<String, Group>)>,
    metrics: AnomalyMetrics,
}

impl Anomalies {
    /// Detectors for `rules` (validated).
    pub fn new(rules: &[AnomalyRule], metrics: AnomalyMetrics) -> Self {
        Self {
            rules: rules.iter().map(|r| (r.clone(), HashMap::new())).collect(),
            metrics,
        }
    }

    /// Replaces the rules with `rules` (validated). A rule that keeps its name, selector,
    /// `group_by` and bucket length keeps its groups' baselines (their meaning is unchanged;
    /// thresholds such as `z_score` apply from the next row); any other starts afresh.
    pub fn reload(&mut self, rules: &[AnomalyRule]) {
        let mut old = std::mem::take(&mut self.rules);
        self.rules = rules
            .iter()
            .map(|r| {
                let kept = old
                    .iter()
                    .position(|(o, _)| same_baselines(o, r))
                    .map(|i| old.swap_remove(i).1);
                let mut groups = kept.unwrap_or_default();
                while groups.len() > r.max_groups {
                    evict_idlest(&mut groups);
                }
                (r.clone(), groups)
            })
            .collect();
    }

    /// Adds `row` to the baselines of its groups and appends a finding per deviation, which
    /// it also returns.
    pub fn observe(&mut self, row: &mut TraceRow) -> Vec<Raised> {
        let mut raised = Vec::new();
        // Relayed connections are not exchanges: nothing about requests is known. A request
        // refused because its group is blocked says nothing about the caller's traffic beyond
        // that it retried; counted, its 429 would feed the error rate that may have caused the
        // block and keep the group blocked for ever.
        if self.rules.is_empty()
            || !row.intercepted
            || row.findings.iter().any(|f| f.kind == BLOCKED)
        {
            return raised;
        }
        let id = Identity::of_row(row);
        let sample = sample(row);
        for (rule, groups) in &mut self.rules {
            if !rule.selector.matches(&id.view()) {
                continue;
            }
            let key = rule.group_by.key(&id.view());
            if !groups.contains_key(&key) && groups.len() >= rule.max_groups {
                evict_idlest(groups);
            }
            let group = groups.entry(key.clone()).or_default();
            for d in group.observe(rule, &sample) {
                let kind = d.metric.kind();
                self.metrics
                    .findings
                    .get_or_create(&KindLabel { kind })
                    .inc();
                raised.push(Raised {
                    rule: rule.clone(),
                    group: key.clone(),
                    kind,
                    finding: row.findings.len(),
                });
                row.findings.push(finding(rule, &key, &d));
            }
        }
        raised
    }
}

/// Whether `new`'s baselines mean what `old`'s did: same identities, same grouping, same
/// buckets.
fn same_baselines(old: &AnomalyRule, new: &AnomalyRule) -> bool {
    old.name == new.name
        && old.selector == new.selector
        && old.group_by == new.group_by
        && old.bucket_secs == new.bucket_secs
}

fn evict_idlest(groups: &mut HashMap<String, Group>) {
    if let Some(k) = groups
        .iter()
        .min_by_key(|(_, g)| g.last_secs)
        .map(|(k, _)| k.clone())
    {
        groups.remove(&k);
    }
}

fn sample(row: &TraceRow) -> Sample {
    let tokens = match (row.input_tokens, row.output_tokens) {
        (None, None) => None,
        (i, o) => Some(i.unwrap_or(0) + o.unwrap_or(0)),
    };
    Sample {
        at_secs: u64::try_from(row.end_time / 1_000_000).unwrap_or(0),
        tokens,
        cost_usd: row.cost_usd,
        error: row.error.is_some() || row.status.is_none_or(|s| s >= 400),
        latency_ms: row.duration_ms,
    }
}

fn finding(rule: &AnomalyRule, group: &str, d: &Deviation) -> row::Finding {
    let group = if group.is_empty() { "all" } else { group };
    row::Finding {
        kind: d.metric.kind().into(),
        severity: severity_name(rule.severity).into(),
        // Chebyshev: a value z deviations out has probability at most 1/z² under any
        // distribution with the baseline's mean and variance.
        #[allow(clippy::cast_possible_truncation)]
        confidence: (1.0 - 1.0 / (d.z * d.z)).clamp(0.0, 1.0) as f32,
        location: LOCATION.into(),
        excerpt: format!(
            "{} {}: {:.4} vs baseline {:.4}±{:.4} (z {:.1}, {} samples) for {group}",
            rule.name,
            d.metric.as_str(),
            d.value,
            d.mean,
            d.sd,
            d.z,
            d.samples
        ),
    }
}

#[cfg(test)]
mod tests;
