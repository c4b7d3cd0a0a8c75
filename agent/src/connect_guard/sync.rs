//! Keeps the kernel's `at_connect` map equal to what the rules say about the pods and
//! containers present now: recomputed every `[control] connect_rescan_ms` (pods and
//! containers appear and go) and at once after a reload.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::scan::{CgroupEntry, scan};
use crate::{
    control::{AllowRule, Control, Identity, at_connect},
    ebpf::{DenyMap, deny_key},
    identity::{DockerNames, PodDirectory, ProcessDetails},
};

/// What the refusal reader needs to name what the kernel reports: the cgroups known at the
/// last scan, and rule names by the ids the kernel carries.
#[derive(Debug, Default)]
pub struct Known {
    cgroups: RwLock<HashMap<u64, ProcessDetails>>,
    rules: RwLock<Vec<String>>,
}

impl Known {
    /// The details of cgroup `id` as of the last scan.
    pub fn cgroup(&self, id: u64) -> Option<ProcessDetails> {
        self.cgroups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// The name of the rule with kernel id `id`.
    pub fn rule(&self, id: u32) -> Option<String> {
        self.rules
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id as usize)
            .cloned()
    }

    /// The kernel id of rule `name`, assigned on first use. Ids are never reused, so an event
    /// read after a reload still names the rule that refused it; the table grows only with
    /// distinct rule names ever configured.
    fn rule_id(&self, name: &str) -> u32 {
        let mut rules = self.rules.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = rules.iter().position(|r| r == name) {
            return u32::try_from(i).unwrap_or(u32::MAX);
        }
        rules.push(name.to_owned());
        u32::try_from(rules.len() - 1).unwrap_or(u32::MAX)
    }
}

/// The task keeping the deny map.
pub struct Syncer {
    pub control: Arc<Control>,
    pub deny: DenyMap,
    /// The agent's provider list, by index (as the kernel's provider map numbers them).
    pub providers: Arc<Vec<String>>,
    /// cgroup2 mount point.
    pub root: PathBuf,
    /// The attach cgroup (absolute).
    pub attach: PathBuf,
    pub pods: Arc<dyn PodDirectory>,
    pub docker: Option<Arc<DockerNames>>,
    pub known: Arc<Known>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").finish_non_exhaustive()
    }
}

impl Syncer {
    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let changed = self.control.changed();
        loop {
            let (rules, every) = self.control.allow_rules();
            self.once(&rules).await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
                () = changed.notified() => {}
            }
        }
    }

    /// One scan and sync.
    pub async fn once(&mut self, rules: &[AllowRule]) {
        let entries = if rules.iter().any(|r| r.at_connect) {
            let (root, attach) = (self.root.clone(), self.attach.clone());
            match tokio::task::spawn_blocking(move || scan(&root, &attach)).await {
                Ok(s) => {
                    if s.truncated {
                        warn!(
                            "at_connect: too many cgroups below the attach cgroup; the scan stopped early"
                        );
                    }
                    s.entries
                }
                Err(e) => {
                    warn!(error = %e, "at_connect: the cgroup scan failed");
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let mut cgroups = HashMap::with_capacity(entries.len());
        let mut desired = BTreeMap::new();
        let node = self.control.node().to_owned();
        for CgroupEntry { id, mut details } in entries {
            details.resolve_pod(self.pods.as_ref());
            if let Some(names) = &self.docker {
                details.resolve_container_name(names).await;
            }
            let identity = Identity::of_cgroup(&node, &details);
            for (provider, rule) in at_connect::refused_providers(rules, &identity, &self.providers)
            {
                desired.insert(deny_key(id, provider), self.known.rule_id(rule));
            }
            cgroups.insert(id, details);
        }
        let before = self.deny.len();
        let failed = self.deny.sync(&desired);
        let metrics = self.control.metrics();
        metrics
            .connect_deny_entries
            .set(i64::try_from(self.deny.len()).unwrap_or(i64::MAX));
        metrics
            .connect_cgroups
            .set(i64::try_from(cgroups.len()).unwrap_or(i64::MAX));
        if before != self.deny.len() || failed > 0 {
            info!(
                entries = self.deny.len(),
                failed,
                cgroups = cgroups.len(),
                "at_connect refusals updated"
            );
        }
        *self
            .known
            .cgroups
            .write()
            .unwrap_or_else(PoisonError::into_inner) = cgroups;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_stable_and_never_reused() {
        let k = Known::default();
        assert_eq!(k.rule_id("a"), 0);
        assert_eq!(k.rule_id("b"), 1);
        assert_eq!(k.rule_id("a"), 0);
        assert_eq!(k.rule(1).as_deref(), Some("b"));
        assert_eq!(k.rule(7), None);
    }
}
