//! The analysis policy on anomaly findings. An anomaly is found after the exchange that
//! revealed it has ended, so the policy cannot act on that exchange; it acts on what follows:
//! a finding the policy resolves to `block` (by kind `anomaly` or `anomaly.cost_spike`,
//! severity, location `exchange`, and the caller's identity for rules with `match`) blocks the
//! anomaly rule's group at the control gate for the rule's `block_secs`. `flag` and `allow`
//! leave the finding on the row as it is; `redact` has nothing to mask (the finding is about
//! traffic, not text) and acts as `flag`.

use std::{fmt::Write as _, sync::Arc};

use super::{LOCATION, Raised};
use crate::{
    alerts::Identity,
    analysis::{Action, Finding, Location, PolicyConfig},
    control::{Control, reload::EngineSlot},
    sink::TraceRow,
};

/// The action `policy` resolves a raised anomaly to (its rules as they apply to the caller).
pub fn action(policy: &PolicyConfig, raised: &Raised) -> Action {
    policy.action_for(&Finding {
        kind: raised.kind,
        severity: raised.rule.severity,
        confidence: 1.0,
        location: Location::Exchange,
        excerpt: String::new(),
        span: 0..0,
        view: None,
    })
}

/// Applies the policy in force to the anomalies of a row.
#[derive(Debug, Clone)]
pub struct Enforcer {
    control: Arc<Control>,
    engine: Arc<EngineSlot>,
}

impl Enforcer {
    /// Blocks through `control`, with the policy of the engine in `engine` (swapped by SIGHUP).
    pub fn new(control: Arc<Control>, engine: Arc<EngineSlot>) -> Self {
        Self { control, engine }
    }

    /// Blocks the groups of `raised` (findings just added to `row`) that the policy blocks,
    /// and says so on each such finding.
    pub fn apply(&self, row: &mut TraceRow, raised: &[Raised]) {
        if raised.is_empty() {
            return;
        }
        // Without an engine there is no analysis and no policy.
        let Some(engine) = self.engine.current() else {
            return;
        };
        let policy = &engine.config.analysis.policy;
        let id = Identity::of_row(row);
        let scoped = policy.for_identity(&id.view());
        let policy = scoped.as_ref().unwrap_or(policy);
        for r in raised {
            if action(policy, r) != Action::Block {
                continue;
            }
            let Some(placed) = self.control.block(&r.rule, &r.group, r.kind) else {
                continue;
            };
            if let Some(f) = row.findings.get_mut(r.finding)
                && f.location == LOCATION
            {
                let until = jiff::Timestamp::from_millisecond(placed.until_ms)
                    .map_or_else(|_| placed.until_ms.to_string(), |t| t.to_string());
                let _ = write!(f.excerpt, "; blocked until {until}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::AnomalyRule;

    fn raised(kind: &'static str, severity: &str) -> Raised {
        let rule: AnomalyRule = toml::from_str(&format!(
            "name = \"r\"\ngroup_by = [\"k8s_workload\"]\nseverity = \"{severity}\""
        ))
        .unwrap();
        Raised {
            rule,
            group: "k8s_workload=a".into(),
            kind,
            finding: 0,
        }
    }

    fn policy(text: &str) -> PolicyConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_policy_resolves_anomalies_by_kind_category_severity_and_location() {
        let cost = raised("anomaly.cost_spike", "high");
        let latency = raised("anomaly.latency", "medium");
        // By category, at a severity.
        let p =
            policy("[[rules]]\nkind = \"anomaly\"\nmin_severity = \"high\"\naction = \"block\"");
        assert_eq!(action(&p, &cost), Action::Block);
        assert_eq!(action(&p, &latency), Action::Flag, "default action");
        // By exact kind and location; other locations do not match anomalies.
        let p = policy(
            "[[rules]]\nkind = \"anomaly.latency\"\nlocation = \"request\"\naction = \"block\"\n\
             [[rules]]\nkind = \"anomaly.latency\"\nlocation = \"exchange\"\naction = \"allow\"",
        );
        assert_eq!(action(&p, &latency), Action::Allow);
        // A default action of block blocks anomalies no rule names too.
        let p = policy("default_action = \"block\"\n[[rules]]\nkind = \"pii\"\naction = \"flag\"");
        assert_eq!(action(&p, &cost), Action::Block);
        assert_eq!(action(&PolicyConfig::default(), &cost), Action::Flag);
    }

    /// An enforcer with `policy_text`, blocking through a control with `rule` configured and
    /// its state file in `dir`.
    fn setup(
        rule: &AnomalyRule,
        policy_text: &str,
        dir: &std::path::Path,
    ) -> (
        Enforcer,
        Arc<Control>,
        tokio::sync::mpsc::Receiver<crate::control::ControlEvent>,
    ) {
        use crate::{
            control::{ControlRules, EventSink},
            llm::{Engine, LlmConfig},
        };
        let (sink, events) = EventSink::channel(16);
        let rules = ControlRules::default();
        let control = Arc::new(Control::new("n", dir, rules, None, Arc::default(), sink).unwrap());
        control.configure_anomalies(std::slice::from_ref(rule));
        let mut cfg = LlmConfig::default();
        cfg.analysis.policy = policy(policy_text);
        let slot = Arc::new(EngineSlot::new(Some(Engine::new(cfg, b"k"))));
        (Enforcer::new(control.clone(), slot), control, events)
    }

    /// Steady rows of a workload, then one with far more tokens: the spike is raised, the
    /// policy blocks it, and the gate refuses that workload only.
    #[test]
    fn a_spike_the_policy_blocks_blocks_its_group_at_the_gate() {
        use crate::{
            anomaly::{Anomalies, AnomalyMetrics, BLOCKED},
            control::{ControlEvent, engine::Request},
        };
        let rule: AnomalyRule = toml::from_str(
            "name = \"tokens\"\ngroup_by = [\"k8s_workload\"]\nmetrics = [\"tokens_per_request\"]\n\
             min_samples = 5\nblock_secs = 60",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let blocking = "[[rules]]\nkind = \"anomaly\"\nlocation = \"exchange\"\naction = \"block\"";
        let (enforcer, control, mut events) = setup(&rule, blocking, dir.path());
        let mut anomalies = Anomalies::new(std::slice::from_ref(&rule), AnomalyMetrics::default());
        let row = |tokens: u64, at: i64| {
            let mut r = TraceRow::new(uuid::Uuid::new_v4(), at - 1000, at);
            r.k8s_workload = "batch".into();
            r.input_tokens = Some(tokens);
            r
        };
        for i in 0..10 {
            let mut r = row(100, 1_000_000 * (i + 1));
            let raised = anomalies.observe(&mut r);
            enforcer.apply(&mut r, &raised);
            assert!(r.findings.is_empty());
        }
        assert!(!control.quarantined());
        let mut spike = row(10_000, 20_000_000);
        let raised = anomalies.observe(&mut spike);
        assert_eq!(raised.len(), 1);
        enforcer.apply(&mut spike, &raised);
        assert_eq!(spike.findings[0].kind, "anomaly.token_spike");
        assert!(
            spike.findings[0].excerpt.contains("; blocked until "),
            "{:?}",
            spike.findings[0]
        );
        assert!(control.quarantined());
        let req = |workload| Request {
            id: crate::control::Identity {
                k8s_workload: workload,
                ..Default::default()
            },
            max_tokens: None,
            input_tokens: 1,
        };
        let refused = control.admit(&req("batch")).refused.unwrap();
        assert_eq!(
            (refused.kind, refused.rule.as_str(), refused.group.as_str()),
            (BLOCKED, "tokens", "k8s_workload=batch")
        );
        assert!(control.admit(&req("chat")).refused.is_none());
        // Its own refusals are not traffic: they neither feed the baselines nor re-block.
        let mut refused_row = row(0, 21_000_000);
        refused_row.findings.push(crate::sink::row::Finding {
            kind: BLOCKED.into(),
            severity: "medium".into(),
            confidence: 1.0,
            location: "request".into(),
            excerpt: String::new(),
        });
        assert!(anomalies.observe(&mut refused_row).is_empty());
        // The block was announced once, and written to the state file.
        assert!(matches!(
            events.try_recv(),
            Ok(ControlEvent::Blocked { ref kind, block_secs: 60, .. }) if kind == "anomaly.token_spike"
        ));
        let saved = crate::control::state::load(&dir.path().join("control-state.json"))
            .unwrap()
            .unwrap();
        assert_eq!(saved.anomaly_blocks[0].scope.rule, "tokens");
        // A reload without the rule ends its blocks.
        control.configure_anomalies(&[]);
        assert!(!control.quarantined());
        assert!(control.admit(&req("batch")).refused.is_none());
        // The default policy (flag) does not block.
        let flag_dir = tempfile::tempdir().unwrap();
        let (flagging, flag_control, _) = setup(&rule, "", flag_dir.path());
        let mut spike = row(1_000_000, 30_000_000);
        let raised = anomalies.observe(&mut spike);
        assert_eq!(raised.len(), 1);
        flagging.apply(&mut spike, &raised);
        assert!(!flag_control.quarantined(), "flag does not block");
        assert!(!spike.findings[0].excerpt.contains("blocked"));
    }

    #[test]
    fn rules_with_a_selector_apply_to_matching_callers_only() {
        let p = policy(
            "[[rules]]\nkind = \"anomaly\"\nmatch = { k8s_namespace = \"prod\" }\naction = \"block\"",
        );
        let prod = crate::control::Identity {
            k8s_namespace: "prod",
            ..Default::default()
        };
        let dev = crate::control::Identity {
            k8s_namespace: "dev",
            ..Default::default()
        };
        let cost = raised("anomaly.cost_spike", "medium");
        assert_eq!(
            action(&p.for_identity(&prod).unwrap(), &cost),
            Action::Block
        );
        assert_eq!(action(&p.for_identity(&dev).unwrap(), &cost), Action::Flag);
    }
}
