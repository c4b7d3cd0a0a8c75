//! Alert rules: which events alert, the dedup key of each, and the alert built from it.

use std::{
    fmt::Write as _,
    time::{Duration, Instant, SystemTime},
};

use uuid::Uuid;

use super::{
    config::RuleConfig,
    dedup::{Decision, Dedup, MAX_KEYS},
    model::{Alert, Event, HealthKind, Identity, Trigger},
    time::rfc3339,
};
use crate::analysis::Severity;
use crate::control::OwnedIdentity;

/// One configured rule with its dedup state.
#[derive(Debug)]
pub struct Rule {
    cfg: RuleConfig,
    /// Indexes of the sinks it sends to.
    pub sinks: Vec<usize>,
    dedup: Dedup,
}

/// What a rule made of an event.
#[derive(Debug)]
pub enum Outcome {
    /// Not for this rule.
    NoMatch,
    /// Matched, but within the window of an earlier alert of its key.
    Suppressed,
    /// Alert.
    Alert(Box<Alert>),
}

impl Rule {
    /// A rule sending to the sinks at `sinks`.
    pub fn new(cfg: RuleConfig, sinks: Vec<usize>) -> Self {
        let dedup = Dedup::new(Duration::from_secs(cfg.window_secs), MAX_KEYS);
        Self { cfg, sinks, dedup }
    }

    /// Whether `old` (a rule before a reload) made the same dedup keys: same name, trigger
    /// and `group_by` (the key is `name|kind|group`).
    pub fn same_key_as(&self, old: &Self) -> bool {
        self.cfg.name == old.cfg.name
            && self.cfg.on == old.cfg.on
            && self.cfg.group_by == old.cfg.group_by
    }

    /// Takes over `old`'s dedup windows and suppressed counts (judged by this rule's window
    /// from now on), so a reload neither repeats an alert nor loses a count.
    pub fn inherit_dedup(&mut self, old: &mut Self) {
        self.dedup.adopt(&mut old.dedup);
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Which trigger class it acts on.
    pub fn trigger(&self) -> Trigger {
        self.cfg.on
    }

    /// Least severity it acts on.
    pub fn min_severity(&self) -> Severity {
        self.cfg.min_severity
    }

    /// Decides on `event`; `agent_host` names the agent in the alert.
    pub fn apply(&mut self, event: &Event, now: Instant, agent_host: &str) -> Outcome {
        if event.trigger() != self.cfg.on {
            return Outcome::NoMatch;
        }
        let (kind, severity, identity, group) = facts(event);
        if severity < self.cfg.min_severity
            || !(self.cfg.kinds.is_empty() || self.cfg.kinds.iter().any(|k| k.matches(kind)))
        {
            return Outcome::NoMatch;
        }
        // Limit and health events have no caller: a selector cannot apply to them.
        if let Some(id) = identity
            && !self.cfg.selector.matches(&id.view())
        {
            return Outcome::NoMatch;
        }
        let group = identity.map_or(group, |id| self.cfg.group_by.key(&id.view()));
        let key = format!("{}|{kind}|{group}", self.cfg.name);
        match self.dedup.check(&key, now) {
            Decision::Suppress => Outcome::Suppressed,
            Decision::Send { suppressed } => Outcome::Alert(Box::new(
                self.alert(event, severity, key, suppressed, agent_host),
            )),
        }
    }

    fn alert(
        &self,
        event: &Event,
        severity: Severity,
        dedup_key: String,
        suppressed: u64,
        agent_host: &str,
    ) -> Alert {
        let mut alert = Alert {
            id: Uuid::new_v4(),
            time: rfc3339(SystemTime::now()),
            rule: self.cfg.name.clone(),
            trigger: event.trigger(),
            severity: severity_name(severity).into(),
            summary: String::new(),
            trace_id: None,
            identity: None,
            finding: None,
            limit: None,
            health: None,
            dedup_key,
            suppressed,
            agent_host: agent_host.into(),
        };
        match event {
            Event::Finding {
                trace_id,
                identity,
                finding,
            } => {
                alert.summary = format!(
                    "{} finding {} in the {} of {}",
                    finding.severity,
                    finding.kind,
                    finding.location,
                    who(&identity.caller)
                );
                alert.trace_id = Some(*trace_id);
                alert.identity = Some((**identity).clone());
                alert.finding = Some(finding.clone());
            }
            Event::Limit(l) => {
                let group = if l.group.is_empty() { "all" } else { &l.group };
                alert.summary = if l.level == "refused" {
                    format!("{} refused a request of {group} ({})", l.rule, l.kind)
                } else if l.level == "blocked" {
                    format!(
                        "{} blocked {group} for {} s after {}",
                        l.rule, l.value, l.kind
                    )
                } else {
                    format!(
                        "{} {} threshold crossed for {group}: {:.4} of {:.4} USD this {}",
                        l.rule, l.level, l.value, l.threshold, l.window
                    )
                };
                alert.limit = Some(l.clone());
            }
            Event::Health(h) => {
                alert.summary = match h.kind {
                    HealthKind::FailOpen => format!(
                        "{} provider connections went direct, uninspected (fail-open)",
                        h.count
                    ),
                    HealthKind::SpoolDropping => format!("{} trace rows were lost", h.count),
                };
                alert.health = Some(h.clone());
            }
        }
        if suppressed > 0 {
            let _ = write!(alert.summary, " ({suppressed} more since the last alert)");
        }
        alert
    }
}

/// The kind (for `kinds` globs and the key), severity, caller, and (without a caller) group
/// of an event.
fn facts(event: &Event) -> (&str, Severity, Option<&Identity>, String) {
    match event {
        Event::Finding {
            identity, finding, ..
        } => (
            &finding.kind,
            parse_severity(&finding.severity),
            Some(&**identity),
            String::new(),
        ),
        Event::Limit(l) => (
            &l.rule,
            match l.level.as_str() {
                "hard" | "refused" | "blocked" => Severity::High,
                _ => Severity::Medium,
            },
            None,
            l.group.clone(),
        ),
        Event::Health(h) => (h.kind.as_str(), Severity::High, None, String::new()),
    }
}

fn who(id: &OwnedIdentity) -> String {
    let mut parts = Vec::new();
    if !id.k8s_namespace.is_empty() {
        parts.push(format!("{}/{}", id.k8s_namespace, id.k8s_workload));
    }
    if !id.exe.is_empty() {
        parts.push(id.exe.clone());
    } else if !id.comm.is_empty() {
        parts.push(id.comm.clone());
    }
    parts.push(format!("uid {}", id.uid));
    parts.join(" ")
}

/// A severity name as trace rows store it; unknown names count as `info`.
pub fn parse_severity(s: &str) -> Severity {
    match s {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        "low" => Severity::Low,
        _ => Severity::Info,
    }
}

/// The stored name of a severity.
pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::alerts::model::{FindingView, HealthEvent};

    fn rule(toml_text: &str) -> Rule {
        Rule::new(toml::from_str(toml_text).unwrap(), vec![0])
    }

    fn finding(kind: &str, severity: &str, workload: &str) -> Event {
        Event::Finding {
            trace_id: Uuid::new_v4(),
            identity: Arc::new(Identity {
                caller: OwnedIdentity {
                    k8s_namespace: "prod".into(),
                    k8s_workload: workload.into(),
                    api_key_fingerprint: "fp:abcd".into(),
                    ..OwnedIdentity::default()
                },
                ..Identity::default()
            }),
            finding: FindingView {
                kind: kind.into(),
                severity: severity.into(),
                location: "request".into(),
                excerpt: "AKIA****(20)".into(),
            },
        }
    }

    #[test]
    fn severity_kind_and_selector_filter_and_dedup_groups() {
        let mut r = rule(
            "name = \"s\"\non = \"finding\"\nmin_severity = \"high\"\nkinds = [\"secret.*\"]\n\
             group_by = [\"k8s_workload\"]\nmatch = { k8s_namespace = \"prod\" }\nwindow_secs = 60",
        );
        assert_eq!(r.cfg.group_by.0, [crate::control::Field::K8sWorkload]);
        let t = Instant::now();
        let host = "h";
        assert!(matches!(
            r.apply(&finding("pii.email", "high", "a"), t, host),
            Outcome::NoMatch
        ));
        assert!(matches!(
            r.apply(&finding("secret.x", "medium", "a"), t, host),
            Outcome::NoMatch
        ));
        let Outcome::Alert(a) = r.apply(&finding("secret.x", "critical", "a"), t, host) else {
            panic!("first alert")
        };
        assert_eq!(a.dedup_key, "s|secret.x|k8s_workload=a");
        assert_eq!(a.finding.as_ref().unwrap().excerpt, "AKIA****(20)");
        assert!(matches!(
            r.apply(&finding("secret.x", "high", "a"), t, host),
            Outcome::Suppressed
        ));
        assert!(matches!(
            r.apply(&finding("secret.x", "high", "b"), t, host),
            Outcome::Alert(_)
        ));
        let later = t + Duration::from_secs(61);
        let Outcome::Alert(a) = r.apply(&finding("secret.x", "high", "a"), later, host) else {
            panic!("after the window")
        };
        assert_eq!(a.suppressed, 1);
        assert!(a.summary.contains("1 more"), "{}", a.summary);
        let mut elsewhere = finding("secret.x", "high", "a");
        if let Event::Finding { identity, .. } = &mut elsewhere {
            Arc::make_mut(identity).caller.k8s_namespace = "dev".into();
        }
        assert!(matches!(r.apply(&elsewhere, later, host), Outcome::NoMatch));
    }

    #[test]
    fn control_events_alert_through_limit_rules() {
        use crate::control::{ControlEvent, events::Level};
        let crossing = ControlEvent::Crossing {
            rule: "team-budget".into(),
            group: "k8s_workload=chat".into(),
            window: crate::control::config::Window::Day,
            level: Level::Hard,
            spent_usd: 10.5,
            threshold_usd: 10.0,
            window_end: 0,
        };
        let mut r =
            rule("name = \"l\"\non = \"limit\"\nmin_severity = \"high\"\nkinds = [\"team-*\"]");
        let t = Instant::now();
        let ev = Event::Limit(crate::alerts::LimitEvent::from(&crossing));
        let Outcome::Alert(a) = r.apply(&ev, t, "h") else {
            panic!("a hard crossing alerts")
        };
        assert_eq!(a.dedup_key, "l|team-budget|k8s_workload=chat");
        assert!(
            a.summary
                .contains("hard threshold crossed for k8s_workload=chat"),
            "{}",
            a.summary
        );
        assert_eq!(a.limit.as_ref().unwrap().window, "day");
        assert!(matches!(r.apply(&ev, t, "h"), Outcome::Suppressed));
        let refused = ControlEvent::Refused {
            rule: "team-budget".into(),
            group: "k8s_workload=batch".into(),
            kind: "limit.budget",
            status: 429,
        };
        let Outcome::Alert(a) = r.apply(&Event::Limit((&refused).into()), t, "h") else {
            panic!("a refusal alerts")
        };
        assert_eq!(a.limit.as_ref().unwrap().status, Some(429));
    }

    #[test]
    fn anomalies_and_health_are_their_own_triggers() {
        let mut r = rule("name = \"h\"\non = \"health\"\nkinds = [\"fail_open\"]");
        let t = Instant::now();
        let ev = Event::Health(HealthEvent {
            kind: HealthKind::FailOpen,
            count: 3,
        });
        let Outcome::Alert(a) = r.apply(&ev, t, "h") else {
            panic!()
        };
        assert_eq!((a.trigger, a.severity.as_str()), (Trigger::Health, "high"));
        assert!(a.summary.starts_with("3 provider connections"));
        let mut f = rule("name = \"f\"\non = \"finding\"");
        assert!(matches!(
            f.apply(&finding("anomaly.cost_spike", "medium", "a"), t, "h"),
            Outcome::NoMatch
        ));
        let mut an = rule("name = \"a\"\non = \"anomaly\"");
        assert!(matches!(
            an.apply(&finding("anomaly.cost_spike", "medium", "a"), t, "h"),
            Outcome::Alert(_)
        ));
    }
}
