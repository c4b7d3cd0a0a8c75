//! The agent's heartbeat. The programs redirect only while it is fresh: a hung or dead agent
//! stops refreshing it, and connections go direct (or are refused, in fail-closed mode).

use aya::maps::{Array, MapData};

use super::clock::monotonic_ns;

/// Writes the heartbeat.
pub struct Heartbeat {
    map: Array<MapData, u64>,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat").finish_non_exhaustive()
    }
}

impl Heartbeat {
    pub(super) fn new(map: Array<MapData, u64>) -> Self {
        Self { map }
    }

    /// Marks the agent alive now.
    pub fn beat(&mut self) -> Result<(), aya::maps::MapError> {
        self.map.set(0, monotonic_ns(), 0)
    }
}
