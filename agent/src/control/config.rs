//! The control sections of the configuration: `[control]`, `[[limits]]` and `[[allow]]`.
//! Reloaded on SIGHUP (see [`super::Control::reload`]).

use std::{collections::HashSet, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::{glob::Glob, selector::GroupBy, selector::Selector};

/// `[control]`: settings shared by every limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// IANA time zone that budget windows are calendar-aligned in (`Europe/Berlin`). Default: `UTC`.
    pub time_zone: String,
    /// Where budget counters are kept across restarts. Default: `state_dir/control-state.json`.
    pub state_file: Option<PathBuf>,
    /// How often the counters are written (also at shutdown). Default: 30 s.
    pub persist_interval_s: u64,
    /// Most counter groups kept per rule; identities beyond it share one overflow group
    /// (`group_by` over traffic-chosen values must not grow memory without bound). Default: 10000.
    pub max_groups_per_rule: usize,
    /// Server names (globs) that look like LLM APIs: a connection relayed because its name is
    /// not configured for interception, to one of these, gets a `shadow_ai.llm_api` finding.
    /// Default: [`super::shadow::DEFAULT_NAMES`]; empty turns it off.
    pub llm_api_names: Vec<Glob>,
    /// How often the cgroups of pods and containers are rescanned for `[[allow]]
    /// at_connect` refusals (also at once on SIGHUP). Default: 1000 ms.
    pub connect_rescan_ms: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            time_zone: "UTC".to_owned(),
            state_file: None,
            persist_interval_s: 30,
            max_groups_per_rule: 10_000,
            llm_api_names: super::shadow::default_names(),
            connect_rescan_ms: 1000,
        }
    }
}

/// A budget window, calendar-aligned in `[control] time_zone`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Hour,
    #[default]
    Day,
    Month,
}

impl Window {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

/// One `[[limits]]` rule. Every limit given applies to each request the selector matches,
/// counted per `group_by` group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRule {
    /// Unique name: the metric label, the state file key, and what refusals name.
    pub name: String,
    /// Which requests the rule applies to. Default: all.
    #[serde(default, rename = "match")]
    pub selector: Selector,
    /// Fields the counters are kept per. Default: none (one counter for the rule).
    #[serde(default)]
    pub group_by: GroupBy,
    /// Budget window. Default: `day`.
    #[serde(default)]
    pub window: Window,
    /// Spend in a window that raises a `soft` crossing event (requests still pass).
    #[serde(default)]
    pub soft_usd: Option<f64>,
    /// Spend in a window after which requests are refused with a 429 until the window ends;
    /// a `hard_80` event is raised at 80% of it and a `hard` event when reached.
    #[serde(default)]
    pub hard_usd: Option<f64>,
    /// Largest `max_tokens` (output cap) a request may ask for.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Largest estimated input (prompt) size in tokens.
    #[serde(default)]
    pub max_input_tokens: Option<u64>,
    /// Sustained requests per second (token bucket).
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Bucket size for `requests_per_second`. Default: `max(1, requests_per_second)`.
    #[serde(default)]
    pub request_burst: Option<f64>,
    /// Sustained tokens (input + output, as the provider reports them) per minute. A request is
    /// admitted while the bucket is not empty; its tokens are taken when it ends.
    #[serde(default)]
    pub tokens_per_minute: Option<f64>,
    /// Bucket size for `tokens_per_minute`. Default: `tokens_per_minute`.
    #[serde(default)]
    pub token_burst: Option<f64>,
}

/// What happens to a request no `[[allow]]` rule approves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnapprovedAction {
    /// Forward it; the trace is flagged with `policy.unapproved_model`.
    #[default]
    Flag,
    /// Refuse it with the provider-shaped 403.
    Block,
}

/// One `[[allow]]` rule: requests its selector matches may use only these providers and models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// Name, reported in findings and metrics.
    pub name: String,
    /// Which callers the rule governs (a `model`/`provider` here narrows it further). Default: all.
    #[serde(default, rename = "match")]
    pub selector: Selector,
    /// Approved provider names (globs). Default: any.
    #[serde(default)]
    pub providers: Vec<Glob>,
    /// Approved model names (globs). Default: any.
    #[serde(default)]
    pub models: Vec<Glob>,
    /// `flag` or `block`. Default: `flag`.
    #[serde(default)]
    pub action: UnapprovedAction,
    /// Also refuse, in the kernel at `connect()`, providers no rule approves for the cgroups
    /// (pods, containers) this rule governs; needs `action = "block"` and a `match` on fields
    /// known per cgroup. Default: false.
    #[serde(default)]
    pub at_connect: bool,
}

impl AllowRule {
    /// Whether the rule approves `provider` (for some models at least).
    pub fn approves_provider(&self, provider: &str) -> bool {
        self.providers.is_empty() || self.providers.iter().any(|g| g.matches(provider))
    }
}

/// The reloadable control sections, validated together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlRules {
    pub control: ControlConfig,
    pub limits: Vec<LimitRule>,
    pub allow: Vec<AllowRule>,
}

impl ControlRules {
    /// Checks names, numbers and the time zone; the error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        jiff::tz::TimeZone::get(&self.control.time_zone)
            .map_err(|e| format!("control.time_zone: {e}"))?;
        if self.control.persist_interval_s == 0 {
            return Err("control.persist_interval_s: must be at least 1".into());
        }
        if self.control.connect_rescan_ms == 0 {
            return Err("control.connect_rescan_ms: must be at least 1".into());
        }
        if self.control.max_groups_per_rule == 0 {
            return Err("control.max_groups_per_rule: must be at least 1".into());
        }
        let mut names = HashSet::new();
        for l in &self.limits {
            let at = |k: &str| format!("limits[{}].{k}", l.name);
            if l.name.is_empty() || !names.insert(l.name.as_str()) {
                return Err(format!("limits: empty or repeated name {:?}", l.name));
            }
            l.group_by.validate().map_err(|e| at(&e))?;
            for (key, v) in [
                ("soft_usd", l.soft_usd),
                ("hard_usd", l.hard_usd),
                ("requests_per_second", l.requests_per_second),
                ("request_burst", l.request_burst),
                ("tokens_per_minute", l.tokens_per_minute),
                ("token_burst", l.token_burst),
            ] {
                if v.is_some_and(|v| !v.is_finite() || v <= 0.0) {
                    return Err(format!("{}: must be a positive number", at(key)));
                }
            }
            if let (Some(s), Some(h)) = (l.soft_usd, l.hard_usd)
                && s > h
            {
                return Err(format!("{}: soft_usd is above hard_usd", at("soft_usd")));
            }
            if l.request_burst.is_some() && l.requests_per_second.is_none() {
                return Err(format!(
                    "{}: needs requests_per_second",
                    at("request_burst")
                ));
            }
            if l.token_burst.is_some() && l.tokens_per_minute.is_none() {
                return Err(format!("{}: needs tokens_per_minute", at("token_burst")));
            }
            let none = l.soft_usd.is_none()
                && l.hard_usd.is_none()
                && l.max_tokens.is_none()
                && l.max_input_tokens.is_none()
                && l.requests_per_second.is_none()
                && l.tokens_per_minute.is_none();
            if none {
                return Err(format!("limits[{}]: sets no limit", l.name));
            }
        }
        let mut names = HashSet::new();
        for a in &self.allow {
            if a.name.is_empty() || !names.insert(a.name.as_str()) {
                return Err(format!("allow: empty or repeated name {:?}", a.name));
            }
            if a.providers.is_empty() && a.models.is_empty() {
                return Err(format!(
                    "allow[{}]: approves neither providers nor models",
                    a.name
                ));
            }
            if a.at_connect {
                validate_at_connect(a)?;
            }
        }
        Ok(())
    }
}

/// An `at_connect` rule is judged per cgroup, before any request exists: it can only refuse,
/// and only by what is known of a cgroup.
fn validate_at_connect(a: &AllowRule) -> Result<(), String> {
    let at = format!("allow[{}].at_connect", a.name);
    if a.action != UnapprovedAction::Block {
        return Err(format!(
            "{at}: needs action = \"block\" (a refused connect cannot be only flagged)"
        ));
    }
    if a.selector.is_empty() {
        return Err(format!(
            "{at}: needs a match on node, k8s_namespace, k8s_workload, k8s_pod or container \
             (the cgroups it refuses)"
        ));
    }
    if let Some(field) = a.selector.per_process_field() {
        return Err(format!(
            "{at}: match may only use node, k8s_namespace, k8s_workload, k8s_pod and container \
             (known per cgroup); {field:?} is known only per process or request"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        control: ControlConfig,
        #[serde(default)]
        limits: Vec<LimitRule>,
        #[serde(default)]
        allow: Vec<AllowRule>,
    }

    fn rules(text: &str) -> Result<ControlRules, String> {
        let d: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        let r = ControlRules {
            control: d.control,
            limits: d.limits,
            allow: d.allow,
        };
        r.validate().map(|()| r)
    }

    #[test]
    fn a_full_config_parses() {
        let r = rules(
            r#"
            [control]
            time_zone = "Europe/Berlin"
            [[limits]]
            name = "team-a"
            match = { k8s_namespace = "team-a" }
            group_by = ["k8s_workload"]
            window = "month"
            soft_usd = 50
            hard_usd = 100
            max_tokens = 4096
            requests_per_second = 5
            [[allow]]
            name = "approved"
            providers = ["openai", "anthropic"]
            models = ["gpt-4o*", "claude-*"]
            action = "block"
            "#,
        )
        .unwrap();
        assert_eq!(r.limits[0].window, Window::Month);
        assert!(
            r.control
                .llm_api_names
                .iter()
                .any(|g| g.matches("api.mistral.ai")),
            "the default names stay when [control] sets others keys"
        );
        let only = rules("[control]\nllm_api_names = [\"llm.internal.example\"]").unwrap();
        assert_eq!(only.control.llm_api_names.len(), 1);
        assert_eq!(r.allow[0].action, UnapprovedAction::Block);
    }

    #[test]
    fn bad_configs_are_rejected_with_the_key() {
        let cases = [
            ("[control]\ntime_zone = \"Mars/Olympus\"", "time_zone"),
            ("[[limits]]\nname = \"a\"\nhard_usd = -1", "hard_usd"),
            (
                "[[limits]]\nname = \"a\"\nsoft_usd = 5\nhard_usd = 1",
                "soft_usd",
            ),
            ("[[limits]]\nname = \"a\"", "sets no limit"),
            (
                "[[limits]]\nname = \"a\"\nmax_tokens = 1\n[[limits]]\nname = \"a\"\nmax_tokens = 2",
                "repeated",
            ),
            (
                "[[limits]]\nname = \"a\"\nmax_tokens = 1\nburst = 3",
                "unknown field",
            ),
            (
                "[[limits]]\nname = \"a\"\nmax_tokens = 1\nwindow = \"week\"",
                "week",
            ),
            ("[[allow]]\nname = \"a\"", "approves neither"),
            (
                "[[allow]]\nname = \"a\"\nproviders = [\"openai\"]\nmatch = { k8s_namespace = \"x\" }\nat_connect = true",
                "needs action = \"block\"",
            ),
            (
                "[[allow]]\nname = \"a\"\nproviders = [\"openai\"]\naction = \"block\"\nat_connect = true",
                "needs a match",
            ),
            (
                "[[allow]]\nname = \"a\"\nproviders = [\"openai\"]\naction = \"block\"\nat_connect = true\nmatch = { k8s_namespace = \"x\", exe = \"/bin/sh\" }",
                "\"exe\" is known only per process",
            ),
            (
                "[[allow]]\nname = \"a\"\nproviders = [\"openai\"]\naction = \"block\"\nat_connect = true\nmatch = { model = \"gpt-*\" }",
                "\"model\" is known only",
            ),
            (
                "[[allow]]\nname = \"a\"\nproviders = [\"openai\"]\nat_connect = \"yes\"",
                "at_connect",
            ),
            ("[control]\nconnect_rescan_ms = 0", "connect_rescan_ms"),
            (
                "[[limits]]\nname = \"a\"\nrequest_burst = 2\nmax_tokens = 1",
                "requests_per_second",
            ),
        ];
        for (text, needle) in cases {
            let e = rules(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert_eq!(rules("").unwrap(), ControlRules::default());
    }

    #[test]
    fn at_connect_is_off_by_default_and_accepted_with_a_cgroup_match() {
        let r = rules(
            "[[allow]]\nname = \"a\"\nproviders = [\"openai\"]\naction = \"block\"\n\
             at_connect = true\nmatch = { k8s_namespace = \"team-*\", container = \"app\" }\n\
             [[allow]]\nname = \"b\"\nproviders = [\"openai\"]",
        )
        .unwrap();
        assert!(r.allow[0].at_connect);
        assert!(!r.allow[1].at_connect);
    }
}
