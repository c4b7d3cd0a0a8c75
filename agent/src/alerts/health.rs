//! Agent health events: counters the agent already keeps (the kernel's `fail_open`, the
//! sink's `rows_dropped`) are read periodically; growth is an event.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{AlertHandle, Event, HealthEvent, HealthKind};

/// Reads the current value of a monotonic counter.
pub type CounterFn = Box<dyn Fn() -> u64 + Send + Sync>;

/// Remembers the last value of each counter and reports growth.
#[derive(Default)]
pub struct Watch {
    last: Vec<(HealthKind, CounterFn, u64)>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("counters", &self.last.len())
            .finish()
    }
}

impl Watch {
    /// Watches `counter` for events of `kind`. Counting starts at zero: growth before the
    /// first check (e.g. fail-open while the agent was down, with pinned maps) is reported.
    pub fn add(&mut self, kind: HealthKind, counter: CounterFn) {
        self.last.push((kind, counter, 0));
    }

    /// The events since the previous call.
    pub fn check(&mut self) -> Vec<HealthEvent> {
        let mut out = Vec::new();
        for (kind, counter, last) in &mut self.last {
            let now = counter();
            if now > *last {
                out.push(HealthEvent {
                    kind: *kind,
                    count: now - *last,
                });
            }
            *last = now;
        }
        out
    }

    /// Checks every `interval` until `shutdown`, sending the events to `alerts`.
    pub async fn run(
        mut self,
        alerts: AlertHandle,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    for e in self.check() {
                        alerts.send(Event::Health(e));
                    }
                }
            }
        }
    }
}

/// The agent's own counters: the kernel's `fail_open` and the sink's `rows_dropped` (every
/// reason).
pub fn agent_watch(kernel: crate::ebpf::KernelStats, sink: crate::sink::SinkMetrics) -> Watch {
    use crate::sink::metrics::{DropLabels, DropReason};
    let mut w = Watch::default();
    w.add(
        HealthKind::FailOpen,
        Box::new(move || {
            kernel
                .read()
                .into_iter()
                .find(|(s, _)| *s == llmtrace_common::Stat::FailOpen)
                .map_or(0, |(_, v)| v)
        }),
    );
    w.add(
        HealthKind::SpoolDropping,
        Box::new(move || {
            [
                DropReason::QueueFull,
                DropReason::SpoolFull,
                DropReason::Corrupt,
                DropReason::Closed,
                DropReason::NoSpace,
                DropReason::IoError,
                DropReason::DeadLetterFull,
            ]
            .into_iter()
            .map(|reason| {
                sink.rows_dropped
                    .get_or_create(&DropLabels { reason })
                    .get()
            })
            .sum()
        }),
    );
    w
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    use super::*;

    #[test]
    fn growth_is_an_event_with_its_count() {
        let c = Arc::new(AtomicU64::new(0));
        let mut w = Watch::default();
        let c2 = c.clone();
        w.add(
            HealthKind::SpoolDropping,
            Box::new(move || c2.load(Ordering::Relaxed)),
        );
        assert!(w.check().is_empty());
        c.store(5, Ordering::Relaxed);
        assert_eq!(
            w.check(),
            [HealthEvent {
                kind: HealthKind::SpoolDropping,
                count: 5
            }]
        );
        assert!(w.check().is_empty());
    }
}
