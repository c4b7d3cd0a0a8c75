//! Enforcement policy: maps findings to actions. Rules are tried in order; the first rule whose
//! kind (exact `secret.aws_access_key` or category `secret`), minimum severity and location all
//! match decides; otherwise `default_action` applies. An exchange takes the strongest action of
//! its findings (`block` > `redact` > `flag` > `allow`).
//!
//! A rule may also name who it applies to with the control selector (`match = { k8s_namespace =
//! "prod-*" }`); such a rule is skipped for other callers.
//!
//! ```toml
//! [analysis.policy]
//! default_action = "flag"
//! [[analysis.policy.rules]]
//! kind = "secret"
//! min_severity = "critical"
//! action = "block"
//! ```

use serde::{Deserialize, Serialize};

use super::finding::{Finding, Location, Severity};
use crate::control::{Identity, Selector};

/// What to do about a finding.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Record nothing beyond the trace.
    Allow,
    /// Record the finding on the trace.
    #[default]
    Flag,
    /// Mask the matched text in the forwarded request (responses: flag).
    Redact,
    /// Refuse the request with a provider-shaped 403; on a streamed response, stop the stream.
    Block,
}

impl Action {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Flag => "flag",
            Self::Redact => "redact",
            Self::Block => "block",
        }
    }
}

/// One policy rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Finding kind (`pii.email`) or category (`pii`); absent matches every kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// Lowest severity the rule applies to; absent matches every severity.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Where the finding was made; absent matches everywhere.
    #[serde(default)]
    pub location: Option<Location>,
    /// Which callers the rule applies to (the `[[limits]]` selector). Default: all.
    #[serde(default, rename = "match", skip_serializing_if = "Selector::is_empty")]
    pub selector: Selector,
    /// The action.
    #[serde(default)]
    pub action: Action,
}

impl PolicyRule {
    fn matches(&self, f: &Finding) -> bool {
        self.kind
            .as_deref()
            .is_none_or(|k| k == f.kind || k == f.category())
            && self.min_severity.is_none_or(|s| f.severity >= s)
            && self.location.is_none_or(|l| l == f.location)
    }

    /// Whether only anomaly findings (found after the exchange, about traffic) can match.
    fn anomalies_only(&self) -> bool {
        self.location == Some(Location::Exchange)
            || self
                .kind
                .as_deref()
                .is_some_and(|k| k == "anomaly" || k.starts_with("anomaly."))
    }
}

/// The policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Action for findings no rule matches. Default: `flag`.
    #[serde(default)]
    pub default_action: Action,
    /// Rules, first match wins. Default: none (everything flagged).
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            default_action: Action::Flag,
            rules: Vec::new(),
        }
    }
}

impl PolicyConfig {
    /// The policy as it applies to `id`: rules whose selector does not match are dropped.
    /// `None` when no rule has a selector (the policy applies as it is, without a copy).
    pub fn for_identity(&self, id: &Identity<'_>) -> Option<Self> {
        if !self.depends_on_identity() {
            return None;
        }
        Some(Self {
            default_action: self.default_action,
            rules: self
                .rules
                .iter()
                .filter(|r| r.selector.matches(id))
                .cloned()
                .collect(),
        })
    }

    /// Whether some rule has a selector: only then does the caller's identity change what
    /// the policy does.
    pub fn depends_on_identity(&self) -> bool {
        self.rules.iter().any(|r| !r.selector.is_empty())
    }

    /// Whether some finding of an exchange's text could be blocked (by a rule or the default
    /// action). Rules only anomaly findings match do not count: those are found after the
    /// exchange and block at the gate, not in it.
    pub fn may_block(&self) -> bool {
        self.default_action == Action::Block
            || self
                .rules
                .iter()
                .any(|r| r.action == Action::Block && !r.anomalies_only())
    }

    /// Whether a request finding could change what is forwarded (a redaction or a block, by a
    /// rule or the default action). When it cannot, the request's detectors need not run
    /// before the request goes out: they run beside the data path with the response's.
    pub fn may_act_on_request(&self) -> bool {
        self.default_action >= Action::Redact
            || self
                .rules
                .iter()
                .any(|r| r.action >= Action::Redact && !r.anomalies_only())
    }

    /// The action for one finding.
    pub fn action_for(&self, f: &Finding) -> Action {
        self.rules
            .iter()
            .find(|r| r.matches(f))
            .map_or(self.default_action, |r| r.action)
    }

    /// The strongest action over `findings` (`allow` when there are none).
    pub fn decide<'a>(&self, findings: impl IntoIterator<Item = &'a Finding>) -> Action {
        findings
            .into_iter()
            .map(|f| self.action_for(f))
            .max()
            .unwrap_or(Action::Allow)
    }
}

/// What happens to a request whose body the analysis cannot read (it does not decode, or is
/// not JSON): the detectors never saw it as the provider will, so it must not pass as clean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnparsed {
    /// Forward it; the trace records why it was not analysed.
    Allow,
    /// Forward it, and the trace is flagged.
    #[default]
    Flag,
    /// Refuse it with the provider-shaped 403.
    Block,
}

impl OnUnparsed {
    /// The action it stands for.
    pub fn action(self) -> Action {
        match self {
            Self::Allow => Action::Allow,
            Self::Flag => Action::Flag,
            Self::Block => Action::Block,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_redaction_or_block_acts_on_a_request() {
        let mut p = PolicyConfig::default();
        assert!(!p.may_act_on_request());
        p.rules.push(PolicyRule {
            kind: Some("pii".into()),
            min_severity: None,
            location: None,
            selector: Selector::default(),
            action: Action::Flag,
        });
        assert!(!p.may_act_on_request());
        // A rule that only anomaly findings (made after the exchange) can match.
        p.rules.push(PolicyRule {
            location: Some(Location::Exchange),
            action: Action::Block,
            ..p.rules[0].clone()
        });
        assert!(!p.may_act_on_request());
        for action in [Action::Redact, Action::Block] {
            let mut q = p.clone();
            q.rules[0].action = action;
            assert!(q.may_act_on_request(), "{action:?}");
            let q = PolicyConfig {
                default_action: action,
                rules: Vec::new(),
            };
            assert!(q.may_act_on_request(), "{action:?}");
        }
    }

    fn finding(kind: &'static str, severity: Severity) -> Finding {
        Finding {
            kind,
            severity,
            confidence: 1.0,
            location: Location::Request,
            excerpt: String::new(),
            span: 0..0,
            view: None,
        }
    }

    #[test]
    fn first_matching_rule_wins_and_strongest_action_decides() {
        let p: PolicyConfig = toml::from_str(
            r#"
            default_action = "flag"
            [[rules]]
            kind = "pii.email"
            action = "allow"
            [[rules]]
            kind = "secret"
            min_severity = "critical"
            action = "block"
            [[rules]]
            kind = "pii"
            action = "redact"
            "#,
        )
        .unwrap();
        let email = finding("pii.email", Severity::Low);
        let card = finding("pii.payment_card", Severity::High);
        let aws = finding("secret.aws_access_key", Severity::Critical);
        let jwt = finding("secret.jwt", Severity::High);
        assert_eq!(p.action_for(&email), Action::Allow);
        assert_eq!(p.action_for(&card), Action::Redact);
        assert_eq!(p.action_for(&aws), Action::Block);
        assert_eq!(p.action_for(&jwt), Action::Flag);
        assert_eq!(p.decide([&email, &card]), Action::Redact);
        assert_eq!(p.decide([&email, &card, &aws]), Action::Block);
        assert_eq!(p.decide([]), Action::Allow);
    }

    #[test]
    fn rules_with_a_selector_apply_to_matching_callers_only() {
        let p: PolicyConfig = toml::from_str(
            r#"
            [[rules]]
            kind = "pii"
            match = { k8s_namespace = "prod-*" }
            action = "block"
            [[rules]]
            kind = "pii"
            action = "redact"
            "#,
        )
        .unwrap();
        let card = finding("pii.payment_card", Severity::High);
        let prod = Identity {
            k8s_namespace: "prod-eu",
            ..Identity::default()
        };
        let dev = Identity {
            k8s_namespace: "dev",
            ..Identity::default()
        };
        assert_eq!(
            p.for_identity(&prod).unwrap().action_for(&card),
            Action::Block
        );
        assert_eq!(
            p.for_identity(&dev).unwrap().action_for(&card),
            Action::Redact
        );
        assert_eq!(PolicyConfig::default().for_identity(&dev), None);
        assert!(toml::from_str::<PolicyConfig>("[[rules]]\nmatch = { pod = \"x\" }").is_err());
    }

    #[test]
    fn rules_for_anomalies_only_do_not_block_exchanges() {
        let p = |text: &str| toml::from_str::<PolicyConfig>(text).unwrap();
        assert!(!p("[[rules]]\nkind = \"anomaly\"\naction = \"block\"").may_block());
        assert!(!p("[[rules]]\nkind = \"anomaly.cost_spike\"\naction = \"block\"").may_block());
        assert!(!p("[[rules]]\nlocation = \"exchange\"\naction = \"block\"").may_block());
        assert!(p("[[rules]]\nkind = \"secret\"\naction = \"block\"").may_block());
        assert!(p("default_action = \"block\"").may_block());
    }

    #[test]
    fn unknown_fields_rejected_and_defaults() {
        assert!(toml::from_str::<PolicyConfig>("defaults = \"flag\"").is_err());
        assert_eq!(
            toml::from_str::<PolicyConfig>("").unwrap(),
            PolicyConfig::default()
        );
    }
}
