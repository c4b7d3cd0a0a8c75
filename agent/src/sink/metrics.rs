//! Prometheus metrics of the sink. Labels are closed enums: bounded cardinality.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why rows were lost.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum DropReason {
    /// The queue in front of the spool writer was full.
    QueueFull,
    /// The spool hit `max_bytes` (either full policy).
    SpoolFull,
    /// A spooled record failed its checksum or was torn by a crash.
    Corrupt,
    /// The row arrived after shutdown began, or could not be encoded within the record limit.
    Closed,
    /// The spool's disk (or the agent's quota on it) was full when the row was written.
    NoSpace,
    /// Another I/O error failed the row's write or fsync.
    IoError,
    /// A dead-lettered row was deleted to keep the dead-letter directory under its cap.
    DeadLetterFull,
}

/// Label set of `rows_dropped`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// Why the rows were lost.
    pub reason: DropReason,
}

/// Counters and gauges of the sink; cheap to clone (shared atomics).
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    /// Rows written to the spool file (handed to the kernel; durable at the next group commit).
    pub rows_spooled: Counter,
    /// Rows ClickHouse acknowledged.
    pub rows_shipped: Counter,
    /// Rows ClickHouse rejected as invalid, written to the dead-letter directory.
    pub rows_failed: Counter,
    /// Rows lost, by reason.
    pub rows_dropped: Family<DropLabels, Counter>,
    /// Insert attempts that failed and were retried.
    pub insert_retries: Counter,
    /// Rows of a batch whose insert failed ambiguously that the server turned out to hold
    /// already (committed, response lost): acknowledged without re-sending them.
    pub rows_already_present: Counter,
    /// Bytes in spool segment files.
    pub spool_bytes: Gauge,
    /// Age in seconds of the oldest row not yet acknowledged by ClickHouse (0 when caught up).
    pub oldest_unshipped_age_seconds: Gauge<f64, AtomicU64>,
    /// Latency of successful inserts in seconds.
    pub batch_latency_seconds: Histogram,
}

impl Default for SinkMetrics {
    fn default() -> Self {
        Self {
            rows_spooled: Counter::default(),
            rows_shipped: Counter::default(),
            rows_failed: Counter::default(),
            rows_dropped: Family::default(),
            insert_retries: Counter::default(),
            rows_already_present: Counter::default(),
            spool_bytes: Gauge::default(),
            oldest_unshipped_age_seconds: Gauge::default(),
            batch_latency_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
        }
    }
}

impl SinkMetrics {
    /// Creates the metrics and registers them under `<prefix>_sink_*` (`llmtrace_sink_*` in the
    /// agent's registry, whose prefix is `llmtrace`: a sub-registry prefix extends its parent's).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("sink");
        r.register(
            "rows_spooled",
            "Rows written to the spool file (durable at the next group commit)",
            m.rows_spooled.clone(),
        );
        r.register(
            "rows_shipped",
            "Rows acknowledged by ClickHouse",
            m.rows_shipped.clone(),
        );
        r.register(
            "rows_failed",
            "Rows rejected by ClickHouse as invalid and moved to the dead-letter directory",
            m.rows_failed.clone(),
        );
        r.register(
            "rows_dropped",
            "Rows lost, by reason",
            m.rows_dropped.clone(),
        );
        r.register(
            "insert_retries",
            "Failed inserts that were retried",
            m.insert_retries.clone(),
        );
        r.register(
            "rows_already_present",
            "Rows found already in ClickHouse after an insert failed without an answer; not re-sent",
            m.rows_already_present.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes in spool segment files",
            m.spool_bytes.clone(),
        );
        r.register(
            "oldest_unshipped_age_seconds",
            "Age of the oldest row not yet acknowledged by ClickHouse",
            m.oldest_unshipped_age_seconds.clone(),
        );
        r.register(
            "batch_latency_seconds",
            "Latency of successful ClickHouse inserts",
            m.batch_latency_seconds.clone(),
        );
        m
    }

    /// Counts `n` lost rows.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        self.rows_dropped
            .get_or_create(&DropLabels { reason })
            .inc_by(n);
    }

    /// Lost rows so far for `reason`.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.rows_dropped
            .get_or_create(&DropLabels { reason })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_encode() {
        // As in the agent (app.rs).
        let mut registry = Registry::with_prefix("llmtrace");
        let m = SinkMetrics::register(&mut registry);
        m.rows_spooled.inc();
        m.dropped(DropReason::QueueFull, 2);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("llmtrace_sink_rows_spooled_total 1"), "{out}");
        assert!(
            out.contains("llmtrace_sink_rows_dropped_total{reason=\"QueueFull\"} 2"),
            "{out}"
        );
    }
}
