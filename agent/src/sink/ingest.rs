//! The spool writer thread: queue → tail subscribers → spool.
//!
//! It runs on its own OS thread so that writes and fsyncs never touch the proxy's runtime;
//! the proxy only encodes the row and does a non-blocking queue push. Each wake-up takes
//! every queued message at once, and producers only wake the writer when it is parked, so
//! under load rows are picked up by a writer that is already running instead of costing a
//! wake-up each.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, oneshot};

use super::metrics::{DropReason, SinkMetrics};
use super::queue::{BatchQueue, Popped};
use super::row::TraceRow;
use super::rowbinary;
use super::spool::{MAX_PAYLOAD, SpoolError, SpoolWriter};
use super::spooled::Spooled;

/// Messages to the writer thread.
#[derive(Debug)]
pub(super) enum Msg {
    /// A finished trace, and the signal to fire once it is in the spool file.
    Row(Payload, Option<Spooled>),
    /// Commit now and report back (the rows before it are then durable).
    Flush(oneshot::Sender<()>),
    /// Commit and stop.
    Shutdown,
}

impl Msg {
    /// What a message weighs in the writer's queue: a row its bytes, a control message nothing
    /// (they are few, and bounded by their waiting senders).
    pub(super) fn weight(&self) -> usize {
        match self {
            Msg::Row(row, _) => row.weight(),
            Msg::Flush(_) | Msg::Shutdown => 0,
        }
    }
}

/// A row on its way to the writer: encoded by the thread that recorded it, unless a `tail`
/// subscriber is there to see it.
#[derive(Debug)]
pub(super) enum Payload {
    /// The row's RowBinary encoding: what the spool stores. The recording thread made the
    /// row's strings (a few dozen allocations) and frees them itself, while they are still in
    /// its cache; freed by the writer, each was a free across threads, and the memory came
    /// back cold to the thread that allocates it next (the allocator took a sixth of the
    /// analysis workers' time; half that since). The writer frees one buffer.
    Encoded(Vec<u8>),
    /// The row itself, while someone tails: the writer hands it to the subscribers and
    /// encodes it, so the queue holds it once rather than as a row and its bytes.
    Tailed(Arc<TraceRow>),
}

impl Payload {
    /// `row` as it travels: kept whole when `tailed` (a subscriber was there when it was
    /// recorded), else encoded here.
    pub(super) fn new(row: TraceRow, tailed: bool) -> Self {
        if tailed {
            return Self::Tailed(Arc::new(row));
        }
        // The encoding is shorter than what the row holds in memory (a string's 24-byte
        // header outweighs its length prefix): one allocation, never grown.
        let mut bytes = Vec::with_capacity(row.heap_bytes());
        rowbinary::encode(&row, &mut bytes);
        Self::Encoded(bytes)
    }

    /// The memory it holds, for the queue's byte bound.
    fn weight(&self) -> usize {
        match self {
            Self::Encoded(bytes) => bytes.capacity(),
            Self::Tailed(row) => row.heap_bytes(),
        }
    }
}

/// Idle wake-up when nothing is pending.
const IDLE: Duration = Duration::from_secs(1);
/// Messages taken per wake-up: bounds the time between two deadline checks.
const BATCH: usize = 1024;
/// Bytes of rows taken per wake-up at most (or one row): a batch in hand, and its copy
/// buffered for one write, are memory the queue's byte bound no longer counts.
const BATCH_BYTES: usize = 4 << 20;
/// A failing spool (full disk) is logged at ERROR at most this often, not once per row.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);
/// Longest pause after a partial batch while rows await their commit (see [`linger`]).
const LINGER: Duration = Duration::from_millis(5);

pub(super) fn run(
    rx: &BatchQueue<Msg>,
    writer: SpoolWriter,
    tail: &broadcast::Sender<Arc<TraceRow>>,
    fsync_interval: Duration,
    metrics: &SinkMetrics,
) {
    let mut w = Writer::new(writer, tail, metrics, fsync_interval);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let wait = w
            .deadline
            .map_or(IDLE, |d| d.saturating_duration_since(Instant::now()));
        if rx.pop_batch_within(&mut batch, BATCH, BATCH_BYTES, Some(wait)) == Popped::Closed {
            break;
        }
        // Nobody waits on a row without a spool signal: only then may the next batch wait.
        // A batch cut by its bytes leaves rows queued: no pause then either.
        let linger_after = batch.len() < BATCH
            && batch.iter().all(|m| !matches!(m, Msg::Row(_, Some(_))))
            && rx.is_empty();
        let stop = w.handle(&mut batch);
        // The batch's rows go to the file now (one write); only the fsync is grouped.
        w.write_out();
        if stop {
            // Refuse (and count, in the handles) what comes later; write what was accepted.
            rx.close();
            while rx.pop_batch_within(&mut batch, BATCH, BATCH_BYTES, None) == Popped::Items {
                w.handle(&mut batch);
            }
            break;
        }
        if w.deadline.is_some_and(|d| Instant::now() >= d) {
            w.commit();
        }
        if linger_after {
            linger(w.deadline);
        }
    }
    w.commit();
}

/// Under a steady trickle of rows the writer would park after each one, and every row would
/// cost the proxy thread that queues it a futex wake and the writer a context switch. While
/// rows await their commit anyway, the writer pauses briefly instead (not parked, so nothing
/// wakes it) and takes what came meanwhile as one batch and one write. The commit deadline
/// is kept; a flush or shutdown waits at most [`LINGER`] longer. Not after a batch whose
/// rows held an app's response end (`[proxy] spool_before_end_ms`): the next such row would
/// wait for the pause too.
fn linger(deadline: Option<Instant>) {
    let Some(d) = deadline else { return };
    let pause = d.saturating_duration_since(Instant::now()).min(LINGER);
    if !pause.is_zero() {
        std::thread::sleep(pause);
    }
}

struct Writer<'a> {
    spool: SpoolWriter,
    tail: &'a broadcast::Sender<Arc<TraceRow>>,
    metrics: &'a SinkMetrics,
    fsync_interval: Duration,
    /// The encoding of a row that came whole (see [`Payload::Tailed`]).
    buf: Vec<u8>,
    /// When the oldest uncommitted row must be committed.
    deadline: Option<Instant>,
    /// Signals of rows appended and not yet written out (fired by the next write-out).
    appended: Vec<Spooled>,
    last_error_log: Option<Instant>,
    /// Errors since the last one logged.
    errors_unlogged: u64,
}

impl<'a> Writer<'a> {
    fn new(
        spool: SpoolWriter,
        tail: &'a broadcast::Sender<Arc<TraceRow>>,
        metrics: &'a SinkMetrics,
        fsync_interval: Duration,
    ) -> Self {
        Self {
            spool,
            tail,
            metrics,
            fsync_interval,
            buf: Vec::new(),
            deadline: None,
            appended: Vec::new(),
            last_error_log: None,
            errors_unlogged: 0,
        }
    }

    /// Handles a batch (leaving it empty); returns whether a shutdown was asked for.
    fn handle(&mut self, batch: &mut Vec<Msg>) -> bool {
        let mut stop = false;
        for msg in batch.drain(..) {
            match msg {
                Msg::Row(payload, spooled) => {
                    let appended = match payload {
                        Payload::Encoded(bytes) => self.append(&bytes),
                        Payload::Tailed(row) => {
                            let mut buf = std::mem::take(&mut self.buf);
                            buf.clear();
                            rowbinary::encode(&row, &mut buf);
                            // A subscriber that left meanwhile is not an error.
                            let _ = self.tail.send(row);
                            let appended = self.append(&buf);
                            self.buf = buf;
                            appended
                        }
                    };
                    // A row not appended drops its signal: its waiter is released at once.
                    if appended {
                        self.appended.extend(spooled);
                    }
                    if self.spool.is_dirty() && self.deadline.is_none() {
                        self.deadline = Some(Instant::now() + self.fsync_interval);
                    }
                }
                Msg::Flush(done) => {
                    self.commit();
                    let _ = done.send(());
                }
                Msg::Shutdown => stop = true,
            }
        }
        stop
    }

    fn commit(&mut self) {
        let done = self.spool.commit();
        self.settle(
            done,
            "cannot write or fsync the spool; the rows not yet durable were given up (counted)",
        );
        self.deadline = None;
    }

    fn write_out(&mut self) {
        let done = self.spool.write_out();
        self.settle(
            done,
            "cannot write to the spool; the rows not yet written were given up (counted)",
        );
    }

    /// After a write-out: the rows appended are in the file (their waiters are released as
    /// spooled) or were given up (their signals are dropped, which releases them too).
    fn settle(&mut self, done: Result<(), SpoolError>, message: &'static str) {
        match done {
            Ok(()) => self.appended.drain(..).for_each(Spooled::done),
            Err(e) => {
                self.appended.clear();
                self.log_error(&e, message);
            }
        }
    }

    /// Appends the encoded row `bytes`; false when it was dropped (counted).
    fn append(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > MAX_PAYLOAD {
            tracing::error!(
                bytes = bytes.len(),
                "trace row exceeds the spool record limit; dropped"
            );
            self.metrics.dropped(DropReason::Closed, 1);
            return false;
        }
        match self.spool.append(bytes, now_us()) {
            Ok(appended) => appended,
            Err(e) => {
                // The failed write gave up the rows appended since the last write-out (the
                // cut counts them): their waiters are released, never told "spooled".
                self.appended.clear();
                self.metrics.dropped(e.drop_reason(), 1);
                self.log_error(
                    &e,
                    "cannot write to the spool; trace rows are lost (counted)",
                );
                false
            }
        }
    }

    /// Logs a spool failure at ERROR, at most once per interval with the count of the ones
    /// in between (a full disk fails every row).
    fn log_error(&mut self, e: &SpoolError, message: &'static str) {
        self.errors_unlogged += 1;
        if self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY)
        {
            self.last_error_log = Some(Instant::now());
            let reason = format!("{:?}", e.drop_reason());
            tracing::error!(error = %e, reason, failures = self.errors_unlogged, "{message}");
            self.errors_unlogged = 0;
        }
    }
}

fn now_us() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    u64::try_from(d).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::sample::sample_row;
    use crate::sink::spooled::Waited;

    #[test]
    fn a_row_is_encoded_where_it_is_recorded_unless_someone_tails() {
        let alone = Payload::new(sample_row(1), false);
        let Payload::Encoded(bytes) = &alone else {
            panic!("nobody tails: only its bytes travel")
        };
        assert_eq!(rowbinary::decode(bytes).unwrap(), sample_row(1));
        assert_eq!(alone.weight(), bytes.capacity());
        assert!(
            bytes.capacity() <= sample_row(1).heap_bytes(),
            "never grown"
        );

        let tailed = Payload::new(sample_row(2), true);
        let Payload::Tailed(row) = &tailed else {
            panic!("someone tails: the row travels whole")
        };
        assert_eq!(**row, sample_row(2));
        assert_eq!(tailed.weight(), sample_row(2).heap_bytes());
    }

    #[tokio::test]
    async fn rows_a_failed_write_gave_up_are_never_told_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let m = SinkMetrics::default();
        let cfg = crate::sink::config::SpoolConfig::default();
        let (spool, _reader) = crate::sink::spool::open(dir.path(), &cfg, &m).unwrap();
        let (tail, _) = broadcast::channel(4);
        let mut w = Writer::new(spool, &tail, &m, Duration::from_hours(1));
        let row = |n, spooled| vec![Msg::Row(Payload::new(sample_row(n), false), spooled)];
        let (first, first_waits) = Spooled::pair(Duration::from_secs(30));
        w.handle(&mut row(1, Some(first)));
        // The next row's write fails half way: the cut gives up both (neither was written
        // out), and a later write-out that succeeds must not tell either "spooled".
        w.spool.fail_next_write = Some(std::io::ErrorKind::Other);
        let (second, second_waits) = Spooled::pair(Duration::from_secs(30));
        w.handle(&mut row(2, Some(second)));
        let (third, third_waits) = Spooled::pair(Duration::from_secs(30));
        w.handle(&mut row(3, Some(third)));
        w.write_out();
        assert_eq!(first_waits.await, Waited::Lost);
        assert_eq!(second_waits.await, Waited::Lost);
        assert_eq!(third_waits.await, Waited::Spooled);
        assert_eq!(m.dropped_count(DropReason::IoError), 2);
    }
}
