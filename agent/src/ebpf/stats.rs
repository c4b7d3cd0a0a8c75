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
    programs: Arc<Vec<(&'static str, u32)>>,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabel {
    program: &'static str,
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
        Stat::ForeignNetns => "foreign_netns",
        Stat::NetnsNotReady => "netns_not_ready",
        Stat::NetnsEventLost => "netns_event_lost",
        Stat::QuicRefused => "quic_refused",
        Stat::ConnectRefused => "connect_refused",
        Stat::RefusalEventLost => "refusal_event_lost",
    }
}

impl KernelStats {
    pub(super) fn new(map: PerCpuArray<MapData, u64>, programs: Vec<(&'static str, u32)>) -> Self {
        Self {
            map: Arc::new(Mutex::new(map)),
            programs: Arc::new(programs),
        }
    }

    /// Run count and total run time of each of our programs, as the kernel accounts them
    /// while `kernel.bpf_stats_enabled` is 1 (zero otherwise).
    pub fn program_runs(&self) -> Vec<(&'static str, u64, std::time::Duration)> {
        let mut out: Vec<_> = self
            .programs
            .iter()
            .map(|(n, _)| (*n, 0, std::time::Duration::ZERO))
            .collect();
        for info in aya::programs::loaded_programs().flatten() {
            if let Some(i) = self.programs.iter().position(|(_, id)| *id == info.id()) {
                out[i] = (self.programs[i].0, info.run_count(), info.run_time());
            }
        }
        out
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
        let runs = self.program_runs();
        let mut metric = encoder.encode_descriptor(
            "ebpf_program_runs",
            "Invocations of each program (counted while kernel.bpf_stats_enabled=1)",
            None,
            MetricType::Counter,
        )?;
        for (program, count, _) in &runs {
            ConstCounter::new(*count).encode(metric.encode_family(&ProgramLabel { program })?)?;
        }
        let mut metric = encoder.encode_descriptor(
            "ebpf_program_run_time_ns",
            "Time spent in each program (counted while kernel.bpf_stats_enabled=1)",
            None,
            MetricType::Counter,
        )?;
        for (program, _, time) in &runs {
            let ns = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
            ConstCounter::new(ns).encode(metric.encode_family(&ProgramLabel { program })?)?;
        }
        Ok(())
    }
}
