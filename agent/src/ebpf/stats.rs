//! The programs' counters, exported as Prometheus counters on each scrape.

use std::sync::{Arc, Mutex};

use aya::maps::{MapData, PerCpuArray};
use llmtrace_common::Stat;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter},
};

/// Handle on the per-CPU counters.
#[derive(Clone)]
pub struct KernelStats {
    map: Arc<Mutex<PerCpuArray<MapData, u64>>>,
}

impl std::fmt::Debug for KernelStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelStats").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

/// Metric label of a counter.
pub fn stat_name(stat: Stat) -> &'static str {
    match stat {
        Stat::Redirected => "redirected",
        Stat::FailOpen => "fail_open",
        Stat::FailClosed => "fail_closed",
        Stat::SelfSkipped => "self_skipped",
        Stat::RecordFailed => "record_failed",
        Stat::PeerRewritten => "peer_rewritten",
    }
}

impl KernelStats {
    pub(super) fn new(map: PerCpuArray<MapData, u64>) -> Self {
        Self {
            map: Arc::new(Mutex::new(map)),
        }
    }

    /// Every counter summed over CPUs.
    pub fn read(&self) -> Vec<(Stat, u64)> {
        let map = self.map.lock().expect("stats map poisoned");
        Stat::ALL
            .iter()
            .map(|s| {
                let total = map
                    .get(&(*s as u32), 0)
                    .map_or(0, |values| values.iter().sum());
                (*s, total)
            })
            .collect()
    }
}

impl Collector for KernelStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "ebpf_events",
            "Decisions taken by the kernel hook, by event",
            None,
            MetricType::Counter,
        )?;
        for (stat, value) in self.read() {
            let label = EventLabel {
                event: stat_name(stat),
            };
            ConstCounter::new(value).encode(metric.encode_family(&label)?)?;
        }
        Ok(())
    }
}
