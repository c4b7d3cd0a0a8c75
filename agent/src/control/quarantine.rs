//! Groups blocked after an anomaly: when the analysis policy resolves an anomaly finding to
//! `block`, the anomaly rule's group (its `group_by` key of the caller) is refused at the gate
//! for the rule's `block_secs`. The table is checked on every request on the proxy's I/O
//! threads, so an empty table costs one atomic load; a held one, a lock and a key per rule that
//! has blocks. It is bounded per rule by the rule's `max_groups`.
//!
//! A block belongs to its rule's name, selector and `group_by`: a reload that keeps those keeps
//! the block (as baselines are kept), any other change or the rule's removal ends it. Blocks are
//! in the control state file, so they outlive a restart.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};

use super::{GroupBy, Identity, Selector};
use crate::anomaly::AnomalyRule;

/// What a block depends on: its rule's name, selector and grouping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    pub rule: String,
    #[serde(default, rename = "match")]
    pub selector: Selector,
    #[serde(default)]
    pub group_by: GroupBy,
}

impl Scope {
    /// The scope of `rule`'s blocks.
    pub fn of(rule: &AnomalyRule) -> Self {
        Self {
            rule: rule.name.clone(),
            selector: rule.selector.clone(),
            group_by: rule.group_by.clone(),
        }
    }
}

/// One blocked group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    /// The anomaly kind that caused it (`anomaly.cost_spike`, ...).
    pub kind: String,
    /// When it ends, in ms since the epoch.
    pub until_ms: i64,
}

/// The blocks of one rule, as the state file keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedBlocks {
    #[serde(flatten)]
    pub scope: Scope,
    pub groups: BTreeMap<String, Block>,
}

/// A request's group is blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The anomaly rule.
    pub rule: String,
    /// The blocked group (`k8s_workload=chat`; empty: every caller the rule selects).
    pub group: String,
    pub block: Block,
}

/// A block put in force by [`Quarantine::block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub until_ms: i64,
    /// Whether the group was not blocked before (else its block was extended).
    pub started: bool,
}

#[derive(Debug)]
struct RuleBlocks {
    scope: Scope,
    block_secs: u64,
    max_groups: usize,
    groups: HashMap<String, Block>,
}

#[derive(Debug, Default)]
struct Table {
    rules: Vec<RuleBlocks>,
    /// Earliest end of any block held (`i64::MAX`: none): the next sweep is due then.
    next_expiry_ms: i64,
}

/// The blocked groups of every anomaly rule.
#[derive(Debug)]
pub struct Quarantine {
    /// Blocks held (ended ones too, until swept): while 0 the data path takes no lock.
    held: AtomicUsize,
    table: Mutex<Table>,
    /// `llmtrace_anomaly_blocked_groups`.
    gauge: Gauge,
}

impl Default for Quarantine {
    fn default() -> Self {
        Self::restore(Vec::new())
    }
}

impl Quarantine {
    /// A table holding `saved` blocks; they stay only for rules [`Self::configure`] keeps.
    pub fn restore(saved: Vec<SavedBlocks>) -> Self {
        let rules = saved
            .into_iter()
            .map(|s| RuleBlocks {
                scope: s.scope,
                block_secs: 0,
                max_groups: usize::MAX,
                groups: s.groups.into_iter().collect(),
            })
            .collect();
        let q = Self {
            held: AtomicUsize::new(0),
            table: Mutex::new(Table {
                rules,
                next_expiry_ms: i64::MIN,
            }),
            gauge: Gauge::default(),
        };
        q.recount(&mut q.lock());
        q
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The gauge of blocked groups, for the registry.
    pub fn gauge(&self) -> Gauge {
        self.gauge.clone()
    }

    /// Whether any group may be blocked (one atomic load: the data path's fast check).
    pub fn any(&self) -> bool {
        self.held.load(Ordering::Acquire) > 0
    }

    /// Takes the anomaly rules in force: a rule that keeps its name, selector and `group_by`
    /// keeps its blocks (its new `block_secs` applies to the next block, its `max_groups`
    /// now); the blocks of any other rule end.
    pub fn configure(&self, rules: &[AnomalyRule], now_ms: i64) {
        let mut t = self.lock();
        let mut old = std::mem::take(&mut t.rules);
        t.rules = rules
            .iter()
            .map(|r| {
                let scope = Scope::of(r);
                let mut groups = old
                    .iter()
                    .position(|o| o.scope == scope)
                    .map(|i| old.swap_remove(i).groups)
                    .unwrap_or_default();
                while groups.len() > r.max_groups {
                    evict_soonest(&mut groups);
                }
                RuleBlocks {
                    scope,
                    block_secs: r.block_secs,
                    max_groups: r.max_groups,
                    groups,
                }
            })
            .collect();
        sweep(&mut t, now_ms);
        self.recount(&mut t);
    }

    /// Blocks `group` of `rule` for the rule's `block_secs` from `now_ms` (a group already
    /// blocked is blocked until the later end). `None` when the rule is no longer configured
    /// as it was when its finding was raised (a reload came between).
    pub fn block(
        &self,
        rule: &AnomalyRule,
        group: &str,
        kind: &str,
        now_ms: i64,
    ) -> Option<Placed> {
        let scope = Scope::of(rule);
        let mut t = self.lock();
        sweep(&mut t, now_ms);
        let r = t.rules.iter_mut().find(|r| r.scope == scope)?;
        #[allow(clippy::cast_possible_wrap)] // at most 30 days, validated
        let until_ms = now_ms.saturating_add(r.block_secs as i64 * 1000);
        let placed = if let Some(b) = r.groups.get_mut(group) {
            if until_ms > b.until_ms {
                b.until_ms = until_ms;
                kind.clone_into(&mut b.kind);
            }
            Placed {
                until_ms: b.until_ms,
                started: false,
            }
        } else {
            if r.groups.len() >= r.max_groups {
                // Bounded: the block closest to its end makes room.
                evict_soonest(&mut r.groups);
            }
            r.groups.insert(
                group.to_owned(),
                Block {
                    kind: kind.to_owned(),
                    until_ms,
                },
            );
            Placed {
                until_ms,
                started: true,
            }
        };
        t.next_expiry_ms = t.next_expiry_ms.min(until_ms);
        self.recount(&mut t);
        Some(placed)
    }

    /// The block that refuses a request of `id` at `now_ms`, if any.
    pub fn check(&self, id: &Identity<'_>, now_ms: i64) -> Option<Hit> {
        if !self.any() {
            return None;
        }
        let mut t = self.lock();
        if now_ms >= t.next_expiry_ms {
            sweep(&mut t, now_ms);
            self.recount(&mut t);
        }
        t.rules.iter().find_map(|r| {
            if r.groups.is_empty() || !r.scope.selector.matches(id) {
                return None;
            }
            let key = r.scope.group_by.key(id);
            let block = r.groups.get(&key)?;
            Some(Hit {
                rule: r.scope.rule.clone(),
                group: key,
                block: block.clone(),
            })
        })
    }

    /// The blocks in force at `now_ms`, for the state file.
    pub fn snapshot(&self, now_ms: i64) -> Vec<SavedBlocks> {
        let mut t = self.lock();
        sweep(&mut t, now_ms);
        self.recount(&mut t);
        t.rules
            .iter()
            .filter(|r| !r.groups.is_empty())
            .map(|r| SavedBlocks {
                scope: r.scope.clone(),
                groups: r
                    .groups
                    .iter()
                    .map(|(k, b)| (k.clone(), b.clone()))
                    .collect(),
            })
            .collect()
    }

    fn recount(&self, t: &mut Table) {
        let n: usize = t.rules.iter().map(|r| r.groups.len()).sum();
        self.held.store(n, Ordering::Release);
        #[allow(clippy::cast_possible_wrap)] // bounded by max_groups per rule
        self.gauge.set(n as i64);
    }
}

/// Drops the blocks that have ended and finds the next end.
fn sweep(t: &mut Table, now_ms: i64) {
    let mut next = i64::MAX;
    for r in &mut t.rules {
        r.groups.retain(|_, b| b.until_ms > now_ms);
        if let Some(m) = r.groups.values().map(|b| b.until_ms).min() {
            next = next.min(m);
        }
    }
    t.next_expiry_ms = next;
}

fn evict_soonest(groups: &mut HashMap<String, Block>) {
    if let Some(k) = groups
        .iter()
        .min_by_key(|(_, b)| b.until_ms)
        .map(|(k, _)| k.clone())
    {
        groups.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> AnomalyRule {
        toml::from_str(text).unwrap()
    }

    fn id(workload: &str) -> Identity<'_> {
        Identity {
            k8s_workload: workload,
            ..Identity::default()
        }
    }

    const BY_WORKLOAD: &str = "name = \"r\"\ngroup_by = [\"k8s_workload\"]\nblock_secs = 2\n";

    #[test]
    fn a_block_refuses_its_group_only_until_it_ends() {
        let q = Quarantine::default();
        let r = rule(BY_WORKLOAD);
        q.configure(std::slice::from_ref(&r), 0);
        assert!(!q.any(), "empty: the data path takes no lock");
        assert_eq!(q.check(&id("a"), 0), None);
        let placed = q
            .block(&r, "k8s_workload=a", "anomaly.cost_spike", 1_000)
            .unwrap();
        assert_eq!(
            placed,
            Placed {
                until_ms: 3_000,
                started: true
            }
        );
        assert!(q.any());
        assert_eq!(q.gauge.get(), 1);
        let hit = q.check(&id("a"), 2_999).unwrap();
        assert_eq!(
            (
                hit.rule.as_str(),
                hit.group.as_str(),
                hit.block.kind.as_str()
            ),
            ("r", "k8s_workload=a", "anomaly.cost_spike")
        );
        assert_eq!(q.check(&id("b"), 2_000), None, "another group");
        // A second anomaly extends the block; it is not a new one.
        let again = q
            .block(&r, "k8s_workload=a", "anomaly.latency", 2_000)
            .unwrap();
        assert_eq!(
            again,
            Placed {
                until_ms: 4_000,
                started: false
            }
        );
        assert!(q.check(&id("a"), 3_999).is_some());
        assert_eq!(q.check(&id("a"), 4_000), None, "ended");
        assert!(!q.any(), "swept: the fast path is back");
        assert_eq!(q.gauge.get(), 0);
    }

    #[test]
    fn a_reload_keeps_blocks_of_unchanged_rules_and_ends_the_others() {
        let q = Quarantine::default();
        let r = rule(BY_WORKLOAD);
        q.configure(std::slice::from_ref(&r), 0);
        q.block(&r, "k8s_workload=a", "anomaly.cost_spike", 0)
            .unwrap();
        // Thresholds and block length change: the block stays.
        let tuned = rule(&format!("{BY_WORKLOAD}z_score = 9.0\nmax_groups = 5"));
        q.configure(std::slice::from_ref(&tuned), 100);
        assert!(q.check(&id("a"), 100).is_some());
        // Another grouping means other groups: the block ends.
        let regrouped = rule("name = \"r\"\ngroup_by = [\"k8s_pod\"]");
        q.configure(std::slice::from_ref(&regrouped), 200);
        assert_eq!(q.check(&id("a"), 200), None);
        assert!(!q.any());
        // A finding raised under the old rule, applied after the reload: no block.
        assert_eq!(
            q.block(&r, "k8s_workload=a", "anomaly.cost_spike", 300),
            None
        );
        // Removing the rule ends its blocks.
        q.configure(std::slice::from_ref(&r), 300);
        q.block(&r, "k8s_workload=a", "anomaly.cost_spike", 300)
            .unwrap();
        q.configure(&[], 400);
        assert_eq!(q.check(&id("a"), 400), None);
    }

    #[test]
    fn blocks_are_bounded_and_survive_a_snapshot() {
        let q = Quarantine::default();
        let r = rule(&format!("{BY_WORKLOAD}max_groups = 2"));
        q.configure(std::slice::from_ref(&r), 0);
        for (i, w) in ["k8s_workload=a", "k8s_workload=b", "k8s_workload=c"]
            .iter()
            .enumerate()
        {
            #[allow(clippy::cast_possible_wrap)]
            q.block(&r, w, "anomaly.request_rate", i as i64 * 10)
                .unwrap();
        }
        // a ended soonest, so it made room.
        assert_eq!(q.check(&id("a"), 50), None);
        assert!(q.check(&id("b"), 50).is_some() && q.check(&id("c"), 50).is_some());
        assert_eq!(q.gauge.get(), 2);
        let saved = q.snapshot(50);
        let json = serde_json::to_string(&saved).unwrap();
        let back = Quarantine::restore(serde_json::from_str(&json).unwrap());
        assert!(back.check(&id("c"), 60).is_some(), "held before configure");
        back.configure(std::slice::from_ref(&r), 60);
        assert!(back.check(&id("c"), 60).is_some(), "kept by the same rule");
        assert_eq!(
            back.snapshot(10_000),
            Vec::new(),
            "ended blocks are not saved"
        );
    }
}
