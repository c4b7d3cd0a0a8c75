//! Trace storage: a durable local spool and a batching ClickHouse shipper.
//!
//! ```text
//! proxy ── SinkHandle::record: encode RowBinary¹, non-blocking queue push ──► writer thread
//! writer thread ─► tail subscribers (broadcast)
//!               └► spool segment files (group commit fsync)
//! shipper thread ── reads committed records ─► batches ─► ClickHouse (HTTP, RowBinary)
//!                └─ ledger: acknowledged position, in-flight batch
//! ```
//! ¹ While a `tail` subscriber is there, the row travels whole and the writer encodes it.
//!
//! With no ClickHouse URL the shipper does not run: the spool keeps rows up to
//! its cap and `llmtrace tail` still sees every row.

pub mod client;
pub mod column;
pub mod config;
pub mod deadletter;
mod ingest;
pub mod metrics;
pub mod migrate;
pub mod present;
pub mod queue;
pub mod retry;
pub mod row;
pub mod rowbinary;
#[cfg(any(test, feature = "test-support"))]
pub mod sample;
pub mod shipper;
pub mod spool;
pub mod spooled;
pub mod tls;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;

pub use self::config::SinkConfig;
use self::ingest::{Msg, Payload};
use self::metrics::DropReason;
pub use self::metrics::SinkMetrics;
use self::queue::{BatchQueue, Producer, PushError};
pub use self::row::{Finding, ToolCall, TraceRow};
pub use self::spooled::{SpoolWait, Spooled, Waited};

/// Rows buffered for each slow `tail` subscriber before it starts missing rows.
const TAIL_CAPACITY: usize = 4096;
/// Lost rows are logged at ERROR at most this often.
const DROP_LOG_EVERY_SECS: u64 = 10;

/// Starting the sink failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// The ClickHouse client could not be built.
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// A thread could not be started.
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, #[source] std::io::Error),
}

/// Entry point of the sink.
#[derive(Debug)]
pub struct Sink;

impl Sink {
    /// Opens (recovering) the spool and starts the writer and, when a URL is
    /// configured, the shipper. The returned task ends after
    /// [`SinkHandle::shutdown`] once the spool is flushed and, if reachable,
    /// ClickHouse has what was spooled.
    pub fn start(
        cfg: &SinkConfig,
        state_dir: &Path,
        metrics: SinkMetrics,
    ) -> Result<(SinkHandle, JoinHandle<()>), SinkError> {
        cfg.validate()?;
        let dir = cfg.spool_dir(state_dir);
        let (writer, reader) = spool::open(&dir, &cfg.spool, &metrics)?;
        let rx = BatchQueue::weighed(cfg.queue_rows, cfg.queue_bytes, Msg::weight);
        let tx = Producer::new(rx.clone());
        let (tail, _) = broadcast::channel(TAIL_CAPACITY);
        let (drain_tx, drain_rx) = watch::channel(false);

        let shipper = match cfg.clickhouse.url {
            Some(_) => {
                let dead = deadletter::DeadLetter::new(
                    &dir.join("dead-letter"),
                    cfg.spool.dead_letter_max_bytes,
                    metrics.clone(),
                );
                Some(shipper::Shipper::new(
                    reader,
                    &cfg.clickhouse,
                    metrics.clone(),
                    dead,
                    drain_rx,
                )?)
            }
            None => None,
        };
        let fsync = Duration::from_millis(cfg.spool.fsync_interval_ms);
        let (tail_w, metrics_w) = (tail.clone(), metrics.clone());
        let writer_thread = std::thread::Builder::new()
            .name("llmtrace-spool".into())
            .spawn(move || ingest::run(&rx, writer, &tail_w, fsync, &metrics_w))
            .map_err(|e| SinkError::Thread("spool writer", e))?;
        let shipper_thread = shipper
            .map(|s| {
                std::thread::Builder::new().name("llmtrace-ship".into()).spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
                    match rt {
                        Ok(rt) => rt.block_on(s.run()),
                        Err(e) => tracing::error!(error = %e, "cannot start the shipper runtime; rows stay in the spool"),
                    }
                })
            })
            .transpose()
            .map_err(|e| SinkError::Thread("shipper", e))?;

        let join = tokio::spawn(async move {
            // The shipper drains only after the writer's final commit.
            let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
            let _ = drain_tx.send(true);
            if let Some(t) = shipper_thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        });
        let last_drop_log = Arc::new(AtomicU64::new(0));
        Ok((
            SinkHandle {
                tx,
                tail,
                metrics,
                last_drop_log,
            },
            join,
        ))
    }
}

/// The proxy's view of the sink; cheap to clone.
#[derive(Debug, Clone)]
pub struct SinkHandle {
    tx: Producer<Msg>,
    tail: broadcast::Sender<Arc<TraceRow>>,
    metrics: SinkMetrics,
    /// Seconds since the epoch of the last queue-full log line (rate limit).
    last_drop_log: Arc<AtomicU64>,
}

impl SinkHandle {
    /// Queues a finished trace without blocking. When the queue is full (or
    /// the sink is shut down) the row is dropped and counted; returns whether
    /// it was queued.
    pub fn record(&self, row: TraceRow) -> bool {
        match self
            .tx
            .queue()
            .push(Msg::Row(Payload::new(row, self.tailed()), None))
        {
            Ok(()) => true,
            Err(PushError::Full(_)) => {
                self.metrics.dropped(DropReason::QueueFull, 1);
                self.log_queue_full();
                false
            }
            Err(PushError::Closed(_)) => {
                self.metrics.dropped(DropReason::Closed, 1);
                false
            }
        }
    }

    /// Queues finished traces without blocking, with one lock and at most one wake-up of
    /// the writer; the ones that do not fit are dropped and counted like [`Self::record`]
    /// (their signal, if any, is dropped with them). A row's [`Spooled`] signal fires once the
    /// row is in the spool file. Leaves `rows` empty.
    pub fn record_many(&self, rows: &mut Vec<(TraceRow, Option<Spooled>)>) {
        // Asked once: whether anyone tails takes the channel's lock.
        let tailed = self.tailed();
        let mut msgs: Vec<Msg> = rows
            .drain(..)
            .map(|(r, s)| Msg::Row(Payload::new(r, tailed), s))
            .collect();
        let closed = self.tx.queue().push_many(&mut msgs);
        if !msgs.is_empty() {
            let n = msgs.len() as u64;
            if closed {
                self.metrics.dropped(DropReason::Closed, n);
            } else {
                self.metrics.dropped(DropReason::QueueFull, n);
                self.log_queue_full();
            }
        }
    }

    /// Whether a `tail` subscriber is there: a row recorded now travels whole (see
    /// [`Payload`]); one that joins later sees the rows recorded after it joined.
    fn tailed(&self) -> bool {
        self.tail.receiver_count() > 0
    }

    /// Logs lost rows at ERROR, at most once per interval.
    fn log_queue_full(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let last = self.last_drop_log.load(Ordering::Relaxed);
        if now >= last + DROP_LOG_EVERY_SECS
            && self
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                total_dropped = self.metrics.dropped_count(DropReason::QueueFull),
                "sink queue is full (queue_rows or queue_bytes): trace rows are being dropped (spool disk too slow?)"
            );
        }
    }

    /// Queues a trace, waiting while the queue is full (for tools and
    /// benchmarks; the proxy uses [`Self::record`]). False after shutdown.
    pub async fn record_wait(&self, row: TraceRow) -> bool {
        let mut msg = Msg::Row(Payload::new(row, self.tailed()), None);
        loop {
            match self.tx.queue().push(msg) {
                Ok(()) => return true,
                Err(PushError::Full(m)) => {
                    msg = m;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                Err(PushError::Closed(_)) => return false,
            }
        }
    }

    /// A live feed of every row recorded from now on (for `llmtrace tail`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TraceRow>> {
        self.tail.subscribe()
    }

    /// Waits until every row recorded before this call is durable on disk.
    pub async fn flush(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.send_control(Msg::Flush(done_tx)) {
            let _ = done_rx.await;
        }
    }

    /// Starts shutdown: the writer commits everything queued and stops, then
    /// the shipper ships what it can within its timeout. Await the task
    /// returned by [`Sink::start`] to know when it is done.
    #[allow(clippy::unused_async)] // callers await it; queuing it no longer needs to wait
    pub async fn shutdown(&self) {
        self.send_control(Msg::Shutdown);
    }

    /// The sink's metrics.
    pub fn metrics(&self) -> &SinkMetrics {
        &self.metrics
    }

    /// Control messages must not be dropped: they are queued past the row bound (each has a
    /// caller waiting for it, so they stay few).
    fn send_control(&self, msg: Msg) -> bool {
        self.tx.queue().push_unbounded(msg).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::sample::sample_row;
    use crate::sink::spool::Batch;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_clickhouse_rows_are_spooled_and_tailed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SinkConfig::default();
        let (h, task) = Sink::start(&cfg, dir.path(), SinkMetrics::default()).unwrap();
        let mut tail = h.subscribe();
        assert!(h.record(sample_row(1)));
        assert_eq!(*tail.recv().await.unwrap(), sample_row(1));
        h.flush().await;
        assert_eq!(h.metrics().rows_spooled.get(), 1);
        h.shutdown().await;
        task.await.unwrap();
        assert!(!h.record(sample_row(2)), "rows after shutdown are refused");
        assert_eq!(h.metrics().dropped_count(DropReason::Closed), 1);

        // The row waits in the spool for a ClickHouse configured later.
        let m = SinkMetrics::default();
        let (_w, mut r) = spool::open(&cfg.spool_dir(dir.path()), &cfg.spool, &m).unwrap();
        let mut batch = Batch::default();
        r.fill(&mut batch, usize::MAX, usize::MAX, r.committed())
            .unwrap();
        assert_eq!(
            rowbinary::decode_all(&batch.data).unwrap(),
            vec![sample_row(1)]
        );
    }

    /// Rows of long prompts fill the queue's bytes long before its row count: those past the
    /// byte bound are dropped and counted like rows past the count, and the ones taken are
    /// spooled whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_past_the_queue_bytes_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SinkConfig {
            queue_bytes: 1 << 20,
            ..SinkConfig::default()
        };
        let (h, task) = Sink::start(&cfg, dir.path(), SinkMetrics::default()).unwrap();
        let long = |n| {
            let mut row = sample_row(n);
            row.request_body = "p".repeat(400 * 1024);
            (row, None)
        };
        // One push of four: a 1 MiB queue takes the first two (800 KiB and some), whatever
        // the writer has taken meanwhile (the push holds the queue's lock).
        let mut rows: Vec<_> = (1..=4).map(long).collect();
        h.record_many(&mut rows);
        assert_eq!(h.metrics().dropped_count(DropReason::QueueFull), 2);
        h.flush().await;
        assert_eq!(h.metrics().rows_spooled.get(), 2);
        // A small row fits again once the writer has taken the long ones.
        assert!(h.record(sample_row(9)));
        h.shutdown().await;
        task.await.unwrap();
        assert_eq!(h.metrics().rows_spooled.get(), 3);
    }

    /// The writer puts a row into the spool file as soon as it has taken it off its queue,
    /// long before the group commit: a SIGKILL of the agent then loses no finished exchange.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_reaches_the_spool_file_before_its_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = SinkConfig::default();
        cfg.spool.fsync_interval_ms = 3_600_000;
        let (h, task) = Sink::start(&cfg, dir.path(), SinkMetrics::default()).unwrap();
        let mut encoded = Vec::new();
        rowbinary::encode(&sample_row(7), &mut encoded);
        assert!(h.record(sample_row(7)));
        let spool_dir = cfg.spool_dir(dir.path());
        let in_file = || {
            std::fs::read_dir(&spool_dir).unwrap().any(|e| {
                let p = e.unwrap().path();
                p.extension().is_some_and(|x| x == "seg")
                    && std::fs::read(&p)
                        .unwrap()
                        .windows(encoded.len())
                        .any(|w| w == encoded.as_slice())
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !in_file() {
            assert!(
                std::time::Instant::now() < deadline,
                "the row never reached the spool file"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(h.metrics().rows_spooled.get(), 1);
        h.shutdown().await;
        task.await.unwrap();
    }
}
