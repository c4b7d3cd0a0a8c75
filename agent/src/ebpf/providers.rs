//! The provider destination map, kept equal to a desired set of routes.

use std::collections::BTreeMap;

use aya::maps::{LpmTrie, MapData, lpm_trie::Key};
use llmtrace_common::{PROVIDER_KEY_PORT_BITS, ProviderKey, ProviderValue};
use tracing::{debug, warn};

use crate::config::IpPrefix;

/// One destination to redirect: an address prefix and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderRoute {
    /// Address or prefix.
    pub prefix: IpPrefix,
    /// Port.
    pub port: u16,
}

/// Owner of the kernel's provider map.
pub struct ProviderMap {
    map: LpmTrie<MapData, ProviderKey, ProviderValue>,
    current: BTreeMap<ProviderRoute, u32>,
}

impl std::fmt::Debug for ProviderMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderMap")
            .field("entries", &self.current.len())
            .finish_non_exhaustive()
    }
}

fn key(route: &ProviderRoute) -> Key<ProviderKey> {
    Key::new(
        PROVIDER_KEY_PORT_BITS + route.prefix.mapped_len(),
        ProviderKey::new(route.prefix.mapped_bytes(), route.port),
    )
}

impl ProviderMap {
    pub(super) fn new(map: LpmTrie<MapData, ProviderKey, ProviderValue>) -> Self {
        Self {
            map,
            current: BTreeMap::new(),
        }
    }

    /// Makes the map hold exactly `desired` (route → provider index): adds new routes first,
    /// then removes stale ones, so a route that moves never has a gap.
    pub fn sync(&mut self, desired: &BTreeMap<ProviderRoute, u32>) {
        for (route, index) in desired {
            if self.current.get(route) == Some(index) {
                continue;
            }
            let value = ProviderValue {
                provider_index: *index,
                flags: 0,
            };
            match self.map.insert(&key(route), value, 0) {
                Ok(()) => {
                    debug!(prefix = %route.prefix, port = route.port, "provider route added");
                    self.current.insert(*route, *index);
                }
                Err(e) => {
                    warn!(prefix = %route.prefix, port = route.port, error = %e, "cannot add a provider route (map full?)");
                }
            }
        }
        let stale: Vec<ProviderRoute> = self
            .current
            .keys()
            .filter(|r| !desired.contains_key(r))
            .copied()
            .collect();
        for route in stale {
            match self.map.remove(&key(&route)) {
                Ok(()) => {
                    debug!(prefix = %route.prefix, port = route.port, "provider route removed");
                    self.current.remove(&route);
                }
                Err(e) => {
                    warn!(prefix = %route.prefix, port = route.port, error = %e, "cannot remove a provider route");
                }
            }
        }
    }

    /// Routes currently in the map.
    pub fn routes(&self) -> impl Iterator<Item = (&ProviderRoute, &u32)> {
        self.current.iter()
    }

    /// Number of routes in the map.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}
