//! What an alert says. Built only from what a trace row already stores (finding kind,
//! location, masked excerpt, key fingerprint), so an alert can never carry a raw secret.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    control::OwnedIdentity,
    sink::{TraceRow, row},
};

/// Who made the call, as the agent knows it for certain (kernel, cgroup, /proc, API key):
/// the agent's host and the caller fields selectors match, serialised side by side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// Host name of the agent's machine.
    pub host: String,
    /// Node, Kubernetes names, container, process, provider, model and key fingerprint.
    #[serde(flatten)]
    pub caller: OwnedIdentity,
}

impl Identity {
    /// The identity columns of `row`.
    pub fn of_row(row: &TraceRow) -> Self {
        // Container name (Docker/CRI, else Kubernetes), else the container id.
        let container = [&row.container_name, &row.k8s_container, &row.container_id]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_default();
        Self {
            host: row.host.clone(),
            caller: OwnedIdentity {
                node: row.node.clone(),
                k8s_namespace: row.k8s_namespace.clone(),
                k8s_workload: row.k8s_workload.clone(),
                k8s_pod: row.k8s_pod.clone(),
                container,
                container_id: row.container_id.clone(),
                exe: row.exe.clone(),
                comm: row.comm.clone(),
                uid: row.uid,
                provider: row.provider.clone(),
                model: row.model.clone(),
                api_key_fingerprint: row.api_key_fingerprint.clone(),
            },
        }
    }

    /// The borrowed form selectors and `group_by` work on.
    pub fn view(&self) -> crate::control::Identity<'_> {
        self.caller.as_identity()
    }
}

/// A finding as alerts carry it: kind, severity, where, and the masked excerpt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingView {
    /// `secret.aws_access_key`, `anomaly.cost_spike`, ...
    pub kind: String,
    /// `info` … `critical`.
    pub severity: String,
    /// `request`, `response`, `tool_call`, `exchange` (anomalies).
    pub location: String,
    /// The masked excerpt the trace row stores.
    pub excerpt: String,
}

impl From<&row::Finding> for FindingView {
    fn from(f: &row::Finding) -> Self {
        Self {
            kind: f.kind.clone(),
            severity: f.severity.clone(),
            location: f.location.clone(),
            excerpt: f.excerpt.clone(),
        }
    }
}

/// A limit event as the control module reports it: a spend threshold crossed, a request
/// refused by a limit, an approval rule or an anomaly block, or a group blocked after an
/// anomaly. It names the rule's counter group (its `group_by` key), not a caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitEvent {
    /// Name of the `[[limits]]`, `[[allow]]` or (for blocks) `[[anomalies]]` rule.
    pub rule: String,
    /// The counter group (`k8s_workload=chat`); empty for a rule-wide counter.
    pub group: String,
    /// `soft`, `hard_80`, `hard` (spend thresholds), `refused`, or `blocked` (a group blocked
    /// after an anomaly the policy blocks).
    pub level: String,
    /// What: `budget` for a crossing, the anomaly kind for a block, else the refusal's kind
    /// (`limit.budget`, `limit.rate`, `policy.unapproved_model`, `anomaly.blocked`, ...).
    pub kind: String,
    /// Budget window (`hour`, `day`, `month`); empty for refusals.
    pub window: String,
    /// Spend reached (USD); the block's length in seconds for a block; 0 for refusals.
    pub value: f64,
    /// Threshold crossed (USD); 0 for refusals.
    pub threshold: f64,
    /// Status of the refusal sent to the app.
    pub status: Option<u16>,
}

impl From<&crate::control::ControlEvent> for LimitEvent {
    fn from(e: &crate::control::ControlEvent) -> Self {
        use crate::control::ControlEvent;
        match e {
            ControlEvent::Crossing {
                rule,
                group,
                window,
                level,
                spent_usd,
                threshold_usd,
                ..
            } => Self {
                rule: rule.clone(),
                group: group.clone(),
                level: level.as_str().into(),
                kind: "budget".into(),
                window: window.as_str().into(),
                value: *spent_usd,
                threshold: *threshold_usd,
                status: None,
            },
            ControlEvent::Blocked {
                rule,
                group,
                kind,
                block_secs,
                ..
            } => Self {
                rule: rule.clone(),
                group: group.clone(),
                level: "blocked".into(),
                kind: kind.clone(),
                window: String::new(),
                #[allow(clippy::cast_precision_loss)] // at most 30 days
                value: *block_secs as f64,
                threshold: 0.0,
                status: Some(429),
            },
            ControlEvent::Refused {
                rule,
                group,
                kind,
                status,
            } => Self {
                rule: rule.clone(),
                group: group.clone(),
                level: "refused".into(),
                kind: (*kind).into(),
                window: String::new(),
                value: 0.0,
                threshold: 0.0,
                status: Some(*status),
            },
        }
    }
}

/// An event about the agent itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthKind {
    /// Provider connections went direct, uninspected, because the agent was down or behind
    /// (the kernel's `fail_open` counter grew).
    FailOpen,
    /// Trace rows were lost (the sink's `rows_dropped` counter grew).
    SpoolDropping,
}

impl HealthKind {
    /// The name used in alerts and dedup keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailOpen => "fail_open",
            Self::SpoolDropping => "spool_dropping",
        }
    }
}

/// A health event: how many times it happened since the last check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthEvent {
    /// What happened.
    pub kind: HealthKind,
    /// Occurrences since the previous event of this kind.
    pub count: u64,
}

/// Something that may raise an alert; rules decide.
#[derive(Debug, Clone)]
pub enum Event {
    /// A finding of a trace row (detections and anomalies alike).
    Finding {
        /// The row's trace id.
        trace_id: Uuid,
        /// Who made the call.
        identity: Arc<Identity>,
        /// The finding.
        finding: FindingView,
    },
    /// A limit crossing.
    Limit(LimitEvent),
    /// An event about the agent.
    Health(HealthEvent),
}

/// The trigger class of an event (a rule's `on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A detection finding (`secret.*`, `pii.*`, `injection.*`, ...).
    Finding,
    /// An `anomaly.*` finding.
    Anomaly,
    /// A limit crossing.
    Limit,
    /// An agent health event.
    Health,
}

impl Event {
    /// Which trigger class the event belongs to.
    pub fn trigger(&self) -> Trigger {
        match self {
            Self::Finding { finding, .. } if finding.kind.starts_with("anomaly.") => {
                Trigger::Anomaly
            }
            Self::Finding { .. } => Trigger::Finding,
            Self::Limit(_) => Trigger::Limit,
            Self::Health(_) => Trigger::Health,
        }
    }
}

/// One alert as every sink delivers it (JSON for the webhook and the file; the same JSON as
/// the syslog message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique id of this alert.
    pub id: Uuid,
    /// When it was raised (RFC 3339, UTC).
    pub time: String,
    /// Name of the rule that raised it.
    pub rule: String,
    /// `finding`, `anomaly`, `limit` or `health`.
    pub trigger: Trigger,
    /// Severity (`info` … `critical`).
    pub severity: String,
    /// One line for humans.
    pub summary: String,
    /// The exchange, when the alert is about one.
    pub trace_id: Option<Uuid>,
    /// Who made the call, when the alert is about a call.
    pub identity: Option<Identity>,
    /// The finding, for finding and anomaly alerts.
    pub finding: Option<FindingView>,
    /// The limit crossing, for limit alerts.
    pub limit: Option<LimitEvent>,
    /// The health event, for health alerts.
    pub health: Option<HealthEvent>,
    /// The deduplication key (rule, group and what happened).
    pub dedup_key: String,
    /// Events with this key suppressed since the previous alert for it.
    pub suppressed: u64,
    /// Host of the agent that raised it.
    pub agent_host: String,
}
