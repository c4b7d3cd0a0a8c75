//! [`Control`]: the live rules and their counters. One mutex guards both; each exchange takes
//! it twice (admission, settlement) for a few map lookups, and a reload swaps the rules under
//! it while keeping the counters of rules that still exist. Groups blocked after an anomaly
//! are in a table of their own ([`Quarantine`]), refused at admission like a spent budget.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use jiff::tz::TimeZone;

use super::{
    allow::{self, UNAPPROVED},
    bucket::Bucket,
    budget::Spend,
    config::{ControlRules, LimitRule, UnapprovedAction},
    events::{ControlEvent, EventSink},
    metrics::{ControlMetrics, RuleKindLabels, RuleLabel},
    quarantine::{Hit, Placed, Quarantine},
    selector::Identity,
    state::{RuleSnapshot, Snapshot},
    window,
};
use crate::{
    anomaly::{AnomalyRule, BLOCKED},
    llm::Refusal,
};

/// Finding kinds of refusals by limits.
pub const BUDGET: &str = "limit.budget";
pub const RATE: &str = "limit.rate";
pub const TOKEN_RATE: &str = "limit.token_rate";
pub const MAX_TOKENS: &str = "limit.max_tokens";
pub const INPUT_TOKENS: &str = "limit.input_tokens";

/// Group key shared by identities beyond `max_groups_per_rule`.
const OVERFLOW: &str = "~overflow";

/// What admission needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub id: Identity<'a>,
    /// Output cap the request asks for.
    pub max_tokens: Option<u64>,
    /// Estimated input size.
    pub input_tokens: u64,
}

/// Why a request may not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub rule: String,
    pub group: String,
    /// Finding kind.
    pub kind: &'static str,
    pub why: Refusal,
    /// Human message for the provider-shaped error (names rule and limit, never traffic).
    pub message: String,
    pub retry_after_s: Option<u64>,
    /// More for the trace row's finding than rule and group (empty: nothing).
    pub note: String,
}

/// The outcome of admission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// `Some`: refuse the request.
    pub refused: Option<Refused>,
    /// Rules that flag the request (it passes): (rule, finding kind).
    pub flagged: Vec<(String, &'static str)>,
}

#[derive(Debug)]
struct Group {
    spend: Spend,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
}

impl Group {
    fn new(rule: &LimitRule, now: f64) -> Self {
        let mut g = Self {
            spend: Spend::default(),
            requests: None,
            tokens: None,
        };
        g.configure(rule, now);
        g
    }

    /// Makes the buckets match the rule (keeping levels of buckets that stay).
    fn configure(&mut self, rule: &LimitRule, now: f64) {
        let set = |b: &mut Option<Bucket>, rate: Option<f64>, cap: f64| match (b.as_mut(), rate) {
            (_, None) => *b = None,
            (Some(b), Some(r)) => b.reconfigure(r, cap, now),
            (None, Some(r)) => *b = Some(Bucket::new(r, cap, now)),
        };
        let rps = rule.requests_per_second;
        set(
            &mut self.requests,
            rps,
            rule.request_burst
                .unwrap_or_else(|| rps.unwrap_or(1.0).max(1.0)),
        );
        let tps = rule.tokens_per_minute.map(|t| t / 60.0);
        set(
            &mut self.tokens,
            tps,
            rule.token_burst.or(rule.tokens_per_minute).unwrap_or(1.0),
        );
    }
}

#[derive(Debug, Default)]
struct LimitState {
    groups: HashMap<String, Group>,
    /// Largest group spend of the newest window seen (for the gauge).
    max_window: (i64, f64),
}

#[derive(Debug)]
struct Inner {
    rules: ControlRules,
    tz: TimeZone,
    limits: Vec<LimitState>,
}

/// The live control rules and counters.
#[derive(Debug)]
pub struct Control {
    node: String,
    default_state_file: PathBuf,
    inner: Mutex<Inner>,
    metrics: Arc<ControlMetrics>,
    events: EventSink,
    origin: Instant,
    quarantine: Quarantine,
    /// Woken on every successful reload (the `at_connect` sync recomputes at once).
    changed: Arc<tokio::sync::Notify>,
}

fn now_s() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// `ms` since the epoch as RFC 3339 to the second (rounded up: never earlier than the end).
fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_second(ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0))
        .map_or_else(|_| ms.to_string(), |t| t.to_string())
}

impl Control {
    /// Builds from validated `rules`, restoring budget spend from `snapshot`. `node` is this
    /// agent's node name (for `node` selectors); `state_dir` holds the default state file.
    pub fn new(
        node: &str,
        state_dir: &std::path::Path,
        rules: ControlRules,
        snapshot: Option<Snapshot>,
        metrics: Arc<ControlMetrics>,
        events: EventSink,
    ) -> Result<Self, String> {
        rules.validate()?;
        let tz = TimeZone::get(&rules.control.time_zone).map_err(|e| e.to_string())?;
        let origin = Instant::now();
        let mut snapshot = snapshot.unwrap_or_default();
        let quarantine = Quarantine::restore(std::mem::take(&mut snapshot.anomaly_blocks));
        let limits = rules
            .limits
            .iter()
            .map(|rule| {
                let mut st = LimitState::default();
                if let Some(saved) = snapshot.limits.remove(&rule.name)
                    && saved.window == rule.window
                {
                    for (key, spend) in saved
                        .groups
                        .into_iter()
                        .take(rules.control.max_groups_per_rule)
                    {
                        let mut g = Group::new(rule, 0.0);
                        g.spend = spend;
                        st.groups.insert(key, g);
                    }
                }
                st
            })
            .collect();
        Ok(Self {
            node: node.to_owned(),
            default_state_file: state_dir.join("control-state.json"),
            inner: Mutex::new(Inner { rules, tz, limits }),
            metrics,
            events,
            origin,
            quarantine,
            changed: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters, not invariants, half-updated.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mono(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// This agent's node name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether any rule is configured (no rules: the data path skips control entirely).
    pub fn active(&self) -> bool {
        let i = self.lock();
        !i.rules.limits.is_empty() || !i.rules.allow.is_empty()
    }

    /// Whether some group may be blocked after an anomaly (one atomic load).
    pub fn quarantined(&self) -> bool {
        self.quarantine.any()
    }

    /// The table of groups blocked after an anomaly.
    pub fn quarantine(&self) -> &Quarantine {
        &self.quarantine
    }

    /// Takes the `[[anomalies]]` rules in force (at start and on reload): blocks of rules
    /// that keep their name, selector and `group_by` stay, the others end.
    pub fn configure_anomalies(&self, rules: &[AnomalyRule]) {
        self.quarantine.configure(rules, now_ms());
    }

    /// Blocks `group` of anomaly `rule` after a finding of `kind` the policy resolved to
    /// `block`. A new block is announced (event, alert) and written to the state file at
    /// once, so a crash does not lift it. `None` when the rule changed since the finding.
    pub fn block(&self, rule: &AnomalyRule, group: &str, kind: &str) -> Option<Placed> {
        let placed = self.quarantine.block(rule, group, kind, now_ms())?;
        if placed.started {
            self.emit(ControlEvent::Blocked {
                rule: rule.name.clone(),
                group: group.to_owned(),
                kind: kind.to_owned(),
                block_secs: rule.block_secs,
                until: placed.until_ms.div_euclid(1000),
            });
            self.persist();
        }
        Some(placed)
    }

    /// Where the counters are persisted.
    pub fn state_file(&self) -> PathBuf {
        self.lock()
            .rules
            .control
            .state_file
            .clone()
            .unwrap_or_else(|| self.default_state_file.clone())
    }

    /// How often to persist.
    pub fn persist_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock().rules.control.persist_interval_s)
    }

    /// Decides whether a request may go to the provider. Nothing is counted for a refused
    /// request; an admitted one takes a token from every request-rate bucket that applies.
    pub fn admit(&self, req: &Request<'_>) -> Admission {
        let (wall, mono) = (now_s(), self.mono());
        let mut out = Admission::default();
        let mut inner = self.lock();
        let Inner { rules, tz, limits } = &mut *inner;
        if let Some(u) = allow::judge(&rules.allow, &req.id) {
            let action = match u.action {
                UnapprovedAction::Flag => "flag",
                UnapprovedAction::Block => "block",
            };
            self.metrics
                .unapproved
                .get_or_create(&RuleKindLabels {
                    rule: u.rule.to_owned(),
                    kind: action,
                })
                .inc();
            if u.action == UnapprovedAction::Block {
                out.refused = Some(Refused {
                    rule: u.rule.to_owned(),
                    group: String::new(),
                    kind: UNAPPROVED,
                    why: Refusal::Forbidden,
                    message: format!(
                        "Blocked by llmtrace: provider {:?} model {:?} is not approved for this workload (rule {})",
                        req.id.provider, req.id.model, u.rule
                    ),
                    retry_after_s: None,
                    note: String::new(),
                });
            } else {
                out.flagged.push((u.rule.to_owned(), UNAPPROVED));
            }
        }
        // An unapproved model is refused for good (403) before a temporary block (429).
        if out.refused.is_none()
            && let Some(hit) = self.quarantine.check(&req.id, now_ms())
        {
            out.refused = Some(blocked(hit, now_ms()));
        }
        let max_groups = rules.control.max_groups_per_rule;
        let mut admitted = Vec::new();
        if out.refused.is_none() {
            for (i, rule) in rules.limits.iter().enumerate() {
                if !rule.selector.matches(&req.id) {
                    continue;
                }
                let key = group_key(rule, &req.id, &limits[i], max_groups);
                let st = &mut limits[i];
                let g = group(st, rule, &key, mono, &self.metrics);
                if let Some(r) = check(rule, g, req, tz, wall, mono) {
                    out.refused = Some(Refused { group: key, ..r });
                    break;
                }
                admitted.push((i, key));
            }
        }
        if out.refused.is_none() {
            for (i, key) in admitted {
                if let Some(b) = limits[i]
                    .groups
                    .get_mut(&key)
                    .and_then(|g| g.requests.as_mut())
                {
                    let _ = b.take(1.0, mono);
                }
            }
        }
        drop(inner);
        if let Some(r) = &out.refused {
            self.metrics
                .refusals
                .get_or_create(&RuleKindLabels {
                    rule: r.rule.clone(),
                    kind: r.kind,
                })
                .inc();
            self.emit(ControlEvent::Refused {
                rule: r.rule.clone(),
                group: r.group.clone(),
                kind: r.kind,
                status: match r.why {
                    Refusal::Forbidden => 403,
                    Refusal::RateLimited => 429,
                    Refusal::Invalid => 400,
                },
            });
        }
        out
    }

    /// Counts an ended exchange: its cost against budgets, its tokens against token rates.
    pub fn settle(&self, id: &Identity<'_>, cost_usd: Option<f64>, tokens: u64) {
        if cost_usd.is_none_or(|c| c <= 0.0) && tokens == 0 {
            return;
        }
        let (wall, mono) = (now_s(), self.mono());
        let mut events = Vec::new();
        let mut inner = self.lock();
        let Inner { rules, tz, limits } = &mut *inner;
        let max_groups = rules.control.max_groups_per_rule;
        for (i, rule) in rules.limits.iter().enumerate() {
            if !rule.selector.matches(id) {
                continue;
            }
            let key = group_key(rule, id, &limits[i], max_groups);
            let st = &mut limits[i];
            let g = group(st, rule, &key, mono, &self.metrics);
            if let Some(b) = g.tokens.as_mut() {
                #[allow(clippy::cast_precision_loss)] // token counts are far below 2^52
                b.charge(tokens as f64, mono);
            }
            let Some(cost) = cost_usd.filter(|c| c.is_finite() && *c > 0.0) else {
                continue;
            };
            let bounds = window::bounds(rule.window, tz, wall);
            g.spend.roll(bounds);
            let crossed = g.spend.add(cost, rule.soft_usd, rule.hard_usd);
            let spent = g.spend.spent_usd;
            let label = RuleLabel {
                rule: rule.name.clone(),
            };
            self.metrics.spent_usd.get_or_create(&label).inc_by(cost);
            if st.max_window.0 != bounds.start {
                st.max_window = (bounds.start, 0.0);
            }
            if spent > st.max_window.1 {
                st.max_window.1 = spent;
                self.metrics
                    .window_spend_max_usd
                    .get_or_create(&label)
                    .set(spent);
            }
            for (level, threshold) in crossed {
                self.metrics
                    .crossings
                    .get_or_create(&RuleKindLabels {
                        rule: rule.name.clone(),
                        kind: level.as_str(),
                    })
                    .inc();
                events.push(ControlEvent::Crossing {
                    rule: rule.name.clone(),
                    group: key.clone(),
                    window: rule.window,
                    level,
                    spent_usd: spent,
                    threshold_usd: threshold,
                    window_end: bounds.end,
                });
            }
        }
        drop(inner);
        for e in events {
            self.emit(e);
        }
    }

    fn emit(&self, e: ControlEvent) {
        if !self.events.send(e) {
            self.metrics.events_dropped.inc();
        }
    }

    /// Replaces the rules with `new` (validated first: an invalid set leaves the old one in
    /// force). Counters of limits that keep their name are kept; a limit whose window kind
    /// changed starts its spend over.
    pub fn reload(&self, new: ControlRules) -> Result<(), String> {
        let tz = new
            .validate()
            .and_then(|()| TimeZone::get(&new.control.time_zone).map_err(|e| e.to_string()))?;
        let mono = self.mono();
        let mut inner = self.lock();
        let inner_ref = &mut *inner;
        let mut old: HashMap<String, (LimitRule, LimitState)> = inner_ref
            .rules
            .limits
            .drain(..)
            .zip(inner_ref.limits.drain(..))
            .map(|(r, s)| (r.name.clone(), (r, s)))
            .collect();
        let limits = new
            .limits
            .iter()
            .map(|rule| match old.remove(&rule.name) {
                Some((was, mut st)) => {
                    for g in st.groups.values_mut() {
                        g.configure(rule, mono);
                        if was.window != rule.window {
                            g.spend = Spend::default();
                        }
                    }
                    st
                }
                None => LimitState::default(),
            })
            .collect();
        *inner = Inner {
            rules: new,
            tz,
            limits,
        };
        drop(inner);
        self.changed.notify_one();
        Ok(())
    }

    /// The `[[allow]]` rules in force and the rescan interval of `at_connect`.
    pub fn allow_rules(&self) -> (Vec<super::AllowRule>, std::time::Duration) {
        let i = self.lock();
        (
            i.rules.allow.clone(),
            std::time::Duration::from_millis(i.rules.control.connect_rescan_ms),
        )
    }

    /// Notified after every successful reload.
    pub fn changed(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// The control metrics (the `at_connect` tasks keep theirs there).
    pub fn metrics(&self) -> &ControlMetrics {
        &self.metrics
    }

    /// Counts `count` connects refused in the kernel by `rule` and raises the refusal event
    /// alerts hear about (status 0: no HTTP response exists). `group` names the caller.
    pub fn note_connect_refusals(&self, rule: &str, group: String, count: u64) {
        self.metrics
            .connect_refusals
            .get_or_create(&RuleLabel {
                rule: rule.to_owned(),
            })
            .inc_by(count);
        self.emit(ControlEvent::Refused {
            rule: rule.to_owned(),
            group,
            kind: super::at_connect::UNAPPROVED_PROVIDER,
            status: 0,
        });
    }

    /// Counts a configuration reload by outcome.
    pub fn note_reload(&self, ok: bool) {
        let kind = if ok { "ok" } else { "rejected" };
        self.metrics
            .reloads
            .get_or_create(&RuleKindLabels {
                rule: String::new(),
                kind,
            })
            .inc();
    }

    /// Adds the shadow-AI finding to a relayed `row` whose server name looks like an LLM API
    /// (see [`super::shadow`]); intercepted rows cost nothing.
    pub fn tag_shadow_ai(&self, row: &mut crate::sink::TraceRow) {
        if row.intercepted {
            return;
        }
        if super::shadow::tag(&self.lock().rules.control.llm_api_names, row) {
            self.metrics.shadow_ai_connections.inc();
        }
    }

    /// The budget spend and the blocks in force, for the state file.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let mut s = Snapshot {
            anomaly_blocks: self.quarantine.snapshot(now_ms()),
            ..Snapshot::default()
        };
        for (rule, st) in inner.rules.limits.iter().zip(&inner.limits) {
            let groups = st
                .groups
                .iter()
                .filter(|(_, g)| g.spend.spent_usd > 0.0)
                .map(|(k, g)| (k.clone(), g.spend.clone()))
                .collect();
            s.limits.insert(
                rule.name.clone(),
                RuleSnapshot {
                    window: rule.window,
                    groups,
                },
            );
        }
        s
    }

    /// Writes the state file; failures are logged and counted (the agent carries on).
    pub fn persist(&self) {
        let path = self.state_file();
        if let Err(e) = super::state::save(&path, &self.snapshot()) {
            self.metrics.state_write_errors.inc();
            tracing::warn!(path = %path.display(), error = %e, "cannot write the control state file");
        }
    }
}

fn group_key(rule: &LimitRule, id: &Identity<'_>, st: &LimitState, max: usize) -> String {
    let key = rule.group_by.key(id);
    if st.groups.len() >= max && !st.groups.contains_key(&key) {
        OVERFLOW.to_owned()
    } else {
        key
    }
}

fn group<'a>(
    st: &'a mut LimitState,
    rule: &LimitRule,
    key: &str,
    mono: f64,
    metrics: &ControlMetrics,
) -> &'a mut Group {
    if !st.groups.contains_key(key) {
        st.groups.insert(key.to_owned(), Group::new(rule, mono));
        #[allow(clippy::cast_possible_wrap)] // bounded by max_groups_per_rule
        metrics
            .groups
            .get_or_create(&RuleLabel {
                rule: rule.name.clone(),
            })
            .set(st.groups.len() as i64);
    }
    st.groups.get_mut(key).expect("inserted above")
}

/// The refusal of a request whose group is blocked: 429 until the block ends.
fn blocked(hit: Hit, now_ms: i64) -> Refused {
    let Hit { rule, group, block } = hit;
    let remaining_ms = block.until_ms.saturating_sub(now_ms).max(0);
    #[allow(clippy::cast_sign_loss)] // not negative
    let retry = (remaining_ms as u64).div_ceil(1000).max(1);
    let until = rfc3339_ms(block.until_ms);
    let who = if group.is_empty() { "all" } else { &group };
    Refused {
        message: format!(
            "requests of {who} are blocked until {until} after {} (llmtrace anomaly rule {rule})",
            block.kind
        ),
        note: format!("{} until {until}", block.kind),
        rule,
        group,
        kind: BLOCKED,
        why: Refusal::RateLimited,
        retry_after_s: Some(retry),
    }
}

fn retry_s(wait: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a positive wait in s
    (wait.ceil() as u64).max(1)
}

/// The first limit of `rule` the request breaks, without counting anything.
fn check(
    rule: &LimitRule,
    g: &mut Group,
    req: &Request<'_>,
    tz: &TimeZone,
    wall: i64,
    mono: f64,
) -> Option<Refused> {
    let refuse = |kind, why, message: String, retry_after_s| Refused {
        rule: rule.name.clone(),
        group: String::new(),
        kind,
        why,
        message: format!("{message} (llmtrace limit {})", rule.name),
        retry_after_s,
        note: String::new(),
    };
    if let (Some(cap), Some(asked)) = (rule.max_tokens, req.max_tokens)
        && asked > cap
    {
        return Some(refuse(
            MAX_TOKENS,
            Refusal::Invalid,
            format!("max_tokens {asked} is above the allowed {cap}"),
            None,
        ));
    }
    if let Some(cap) = rule.max_input_tokens
        && req.input_tokens > cap
    {
        return Some(refuse(
            INPUT_TOKENS,
            Refusal::Invalid,
            format!(
                "the input (about {} tokens) is above the allowed {cap}",
                req.input_tokens
            ),
            None,
        ));
    }
    if rule.hard_usd.is_some() {
        let bounds = window::bounds(rule.window, tz, wall);
        g.spend.roll(bounds);
        if g.spend.exhausted(rule.hard_usd) {
            return Some(refuse(
                BUDGET,
                Refusal::RateLimited,
                format!(
                    "the {} budget of {} USD is spent",
                    rule.window.as_str(),
                    rule.hard_usd.unwrap_or_default()
                ),
                Some(bounds.remaining_s(wall)),
            ));
        }
    }
    if let Some(b) = g.requests.as_mut()
        && b.level(mono) < 1.0
    {
        let wait = b.take(1.0, mono).err().unwrap_or(1.0);
        return Some(refuse(
            RATE,
            Refusal::RateLimited,
            "request rate limit reached".to_owned(),
            Some(retry_s(wait)),
        ));
    }
    if let Some(b) = g.tokens.as_mut()
        && let Err(wait) = b.check_positive(mono)
    {
        return Some(refuse(
            TOKEN_RATE,
            Refusal::RateLimited,
            "token rate limit reached".to_owned(),
            Some(retry_s(wait)),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::{AllowRule, ControlConfig};

    fn rules(text: &str) -> ControlRules {
        #[derive(serde::Deserialize)]
        struct D {
            #[serde(default)]
            limits: Vec<LimitRule>,
            #[serde(default)]
            allow: Vec<AllowRule>,
        }
        let d: D = toml::from_str(text).unwrap();
        ControlRules {
            control: ControlConfig::default(),
            limits: d.limits,
            allow: d.allow,
        }
    }

    fn control(text: &str) -> (Control, tokio::sync::mpsc::Receiver<ControlEvent>) {
        let (sink, rx) = EventSink::channel(64);
        let dir = std::env::temp_dir();
        let c = Control::new("n", &dir, rules(text), None, Arc::default(), sink).unwrap();
        (c, rx)
    }

    fn req<'a>(workload: &'a str, model: &'a str) -> Request<'a> {
        Request {
            id: Identity {
                k8s_workload: workload,
                provider: "openai",
                model,
                ..Identity::default()
            },
            max_tokens: Some(100),
            input_tokens: 10,
        }
    }

    #[test]
    fn budget_per_group_refuses_when_spent_and_raises_crossings() {
        let (c, mut rx) = control(
            "[[limits]]\nname = \"b\"\ngroup_by = [\"k8s_workload\"]\nsoft_usd = 0.5\nhard_usd = 1.0",
        );
        assert_eq!(c.admit(&req("a", "m")), Admission::default());
        c.settle(&req("a", "m").id, Some(0.6), 10);
        assert!(c.admit(&req("a", "m")).refused.is_none());
        c.settle(&req("a", "m").id, Some(0.5), 10);
        let r = c.admit(&req("a", "m")).refused.unwrap();
        assert_eq!(
            (r.kind, r.why, r.group.as_str()),
            (BUDGET, Refusal::RateLimited, "k8s_workload=a")
        );
        assert!(r.retry_after_s.unwrap() >= 1 && r.retry_after_s.unwrap() <= 86_400);
        assert!(c.admit(&req("b", "m")).refused.is_none(), "another group");
        let mut levels = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let ControlEvent::Crossing { level, .. } = e {
                levels.push(level.as_str());
            }
        }
        assert_eq!(levels, ["soft", "hard_80", "hard"]);
    }

    #[test]
    fn caps_rates_and_approvals() {
        let (c, _rx) = control(
            r#"
            [[limits]]
            name = "caps"
            max_tokens = 50
            [[limits]]
            name = "rate"
            match = { k8s_workload = "fast" }
            requests_per_second = 0.001
            request_burst = 2
            [[allow]]
            name = "ok"
            models = ["gpt-4o-mini"]
            action = "block"
            "#,
        );
        let mut r = req("slow", "gpt-4o-mini");
        assert_eq!(c.admit(&r).refused.unwrap().kind, MAX_TOKENS);
        r.max_tokens = Some(50);
        assert!(c.admit(&r).refused.is_none());
        let fast = Request {
            max_tokens: None,
            ..req("fast", "gpt-4o-mini")
        };
        assert!(c.admit(&fast).refused.is_none());
        assert!(c.admit(&fast).refused.is_none());
        let refused = c.admit(&fast).refused.unwrap();
        assert_eq!((refused.kind, refused.why), (RATE, Refusal::RateLimited));
        assert!(refused.retry_after_s.unwrap() > 900);
        let bad = Request {
            max_tokens: None,
            ..req("slow", "gpt-4o")
        };
        let refused = c.admit(&bad).refused.unwrap();
        assert_eq!(
            (refused.kind, refused.why),
            (UNAPPROVED, Refusal::Forbidden)
        );
    }

    #[test]
    fn reload_keeps_counters_of_surviving_rules_and_rejects_invalid_sets() {
        let text = "[[limits]]\nname = \"b\"\nhard_usd = 1.0";
        let (c, _rx) = control(text);
        c.settle(&req("a", "m").id, Some(2.0), 0);
        assert!(c.admit(&req("a", "m")).refused.is_some());
        assert!(c.reload(rules("[[limits]]\nname = \"b\"")).is_err());
        assert!(c.admit(&req("a", "m")).refused.is_some(), "old rules kept");
        c.reload(rules(
            "[[limits]]\nname = \"b\"\nhard_usd = 1.5\nmax_tokens = 1000",
        ))
        .unwrap();
        assert!(
            c.admit(&req("a", "m")).refused.is_some(),
            "spend kept across reload"
        );
        c.reload(rules("[[limits]]\nname = \"other\"\nhard_usd = 1.5"))
            .unwrap();
        assert!(
            c.admit(&req("a", "m")).refused.is_none(),
            "a new rule starts at zero"
        );
    }

    #[test]
    fn snapshot_restores_spend() {
        let text = "[[limits]]\nname = \"b\"\ngroup_by = [\"k8s_workload\"]\nhard_usd = 1.0";
        let (c, _rx) = control(text);
        c.settle(&req("a", "m").id, Some(1.0), 0);
        let snap = c.snapshot();
        let (sink, _rx2) = EventSink::channel(1);
        let d = std::env::temp_dir();
        let back = Control::new("n", &d, rules(text), Some(snap), Arc::default(), sink).unwrap();
        assert!(back.admit(&req("a", "m")).refused.is_some());
        assert!(back.admit(&req("b", "m")).refused.is_none());
    }

    #[test]
    fn an_anomaly_block_is_a_429_for_its_group_and_survives_a_restart_not_its_rule() {
        // A new block is written to the state file at once: a directory of its own.
        let dir = tempfile::tempdir().unwrap();
        let (sink, mut rx) = EventSink::channel(64);
        let c = Control::new("n", dir.path(), rules(""), None, Arc::default(), sink).unwrap();
        let rule: AnomalyRule =
            toml::from_str("name = \"spikes\"\ngroup_by = [\"k8s_workload\"]\nblock_secs = 60")
                .unwrap();
        c.configure_anomalies(std::slice::from_ref(&rule));
        assert!(!c.quarantined());
        assert!(
            c.block(&rule, "k8s_workload=a", "anomaly.cost_spike")
                .unwrap()
                .started
        );
        let r = c.admit(&req("a", "m")).refused.unwrap();
        assert_eq!(
            (r.kind, r.why, r.rule.as_str(), r.group.as_str()),
            (BLOCKED, Refusal::RateLimited, "spikes", "k8s_workload=a")
        );
        assert!((59..=60).contains(&r.retry_after_s.unwrap()), "{r:?}");
        assert!(r.note.starts_with("anomaly.cost_spike until 20"), "{r:?}");
        assert!(r.message.contains("spikes") && r.message.contains("anomaly.cost_spike"));
        assert!(c.admit(&req("b", "m")).refused.is_none(), "another group");
        let label = RuleKindLabels {
            rule: "spikes".into(),
            kind: BLOCKED,
        };
        assert_eq!(c.metrics.refusals.get_or_create(&label).get(), 1);
        assert!(matches!(rx.try_recv(), Ok(ControlEvent::Blocked { .. })));
        assert!(matches!(
            rx.try_recv(),
            Ok(ControlEvent::Refused { status: 429, .. })
        ));
        // A restart restores it (the state file), for the same rule only.
        let snap = super::super::state::load(&dir.path().join("control-state.json"))
            .unwrap()
            .unwrap();
        assert_eq!(snap.anomaly_blocks, c.snapshot().anomaly_blocks);
        let (sink, _rx2) = EventSink::channel(1);
        let back =
            Control::new("n", dir.path(), rules(""), Some(snap), Arc::default(), sink).unwrap();
        back.configure_anomalies(std::slice::from_ref(&rule));
        assert_eq!(
            back.admit(&req("a", "m")).refused.map(|r| r.kind),
            Some(BLOCKED)
        );
        back.configure_anomalies(&[]);
        assert!(back.admit(&req("a", "m")).refused.is_none());
    }

    #[test]
    fn group_count_is_bounded() {
        let (sink, _rx) = EventSink::channel(1);
        let mut r =
            rules("[[limits]]\nname = \"b\"\ngroup_by = [\"k8s_workload\"]\nhard_usd = 1.0");
        r.control.max_groups_per_rule = 2;
        let c = Control::new("n", &std::env::temp_dir(), r, None, Arc::default(), sink).unwrap();
        for w in ["a", "b", "c", "d"] {
            c.settle(&req(w, "m").id, Some(0.6), 0);
        }
        // c and d share the overflow group, which is now over its budget.
        assert!(c.admit(&req("e", "m")).refused.is_some());
        assert!(c.admit(&req("a", "m")).refused.is_none());
        assert_eq!(c.snapshot().limits["b"].groups.len(), 3);
    }
}
