//! The kernel's `at_connect` map, kept equal to a desired set of (cgroup, provider) refusals,
//! and the ring of refusal events.

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData, RingBuf};
use llmtrace_common::{DenyKey, DenyValue};
use tracing::warn;

/// Owner of the kernel's deny map.
pub struct DenyMap {
    map: HashMap<MapData, DenyKey, DenyValue>,
    current: BTreeMap<DenyKey, u32>,
}

impl std::fmt::Debug for DenyMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenyMap")
            .field("entries", &self.current.len())
            .finish_non_exhaustive()
    }
}

/// A refusal: cgroup id and provider index.
pub fn deny_key(cgroup_id: u64, provider_index: u32) -> DenyKey {
    DenyKey {
        cgroup_id,
        provider_index,
        reserved: 0,
    }
}

impl DenyMap {
    pub(super) fn new(map: HashMap<MapData, DenyKey, DenyValue>) -> Self {
        Self {
            map,
            current: BTreeMap::new(),
        }
    }

    /// Makes the map hold exactly `desired` (key → rule id): adds and updates first, then
    /// removes stale entries. Returns how many entries could not be written (map full).
    pub fn sync(&mut self, desired: &BTreeMap<DenyKey, u32>) -> usize {
        let mut failed = 0;
        for (key, rule_id) in desired {
            if self.current.get(key) == Some(rule_id) {
                continue;
            }
            let value = DenyValue {
                rule_id: *rule_id,
                reserved: 0,
            };
            match self.map.insert(key, value, 0) {
                Ok(()) => {
                    self.current.insert(*key, *rule_id);
                }
                Err(e) => {
                    failed += 1;
                    warn!(cgroup_id = key.cgroup_id, provider_index = key.provider_index, error = %e, "cannot add an at_connect refusal (map full?)");
                }
            }
        }
        let stale: Vec<DenyKey> = self
            .current
            .keys()
            .filter(|k| !desired.contains_key(k))
            .copied()
            .collect();
        for key in stale {
            match self.map.remove(&key) {
                Ok(()) => {
                    self.current.remove(&key);
                }
                Err(e) => {
                    warn!(cgroup_id = key.cgroup_id, error = %e, "cannot remove an at_connect refusal");
                }
            }
        }
        failed
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}

/// The maps of `at_connect`, for the one task that keeps them.
pub struct ConnectMaps {
    /// (cgroup, provider) → rule.
    pub deny: DenyMap,
    /// Refused connects.
    pub events: RingBuf<MapData>,
}

impl std::fmt::Debug for ConnectMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectMaps")
            .field("deny", &self.deny)
            .finish_non_exhaustive()
    }
}
