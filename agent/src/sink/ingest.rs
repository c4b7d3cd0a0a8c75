//! The spool writer thread: queue → encode → tail subscribers → spool.
//!
//! It runs on its own OS thread so that encoding, writes and fsyncs never touch the proxy's
//! runtime; the proxy only does a non-blocking queue push. Each wake-up takes every queued
//! message at once, and producers only wake the writer when it is parked, so under load rows
//! are picked up by a writer that is already running instead of costing a wake-up each.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, oneshot};

use super::metrics::{DropReason, SinkMetrics};
use super::queue::{BatchQueue, Popped};
use super::row::TraceRow;
use super::rowbinary;
use super::spool::{MAX_PAYLOAD, SpoolWriter};

/// Messages to the writer thread.
#[derive(Debug)]
pub(super) enum Msg {
    /// A finished trace.
    Row(Arc<TraceRow>),
    /// Commit now and report back (the rows before it are then durable).
    Flush(oneshot::Sender<()>),
    /// Commit and stop.
    Shutdown,
}

/// Idle wake-up when nothing is pending.
const IDLE: Duration = Duration::from_secs(1);
/// Messages taken per wake-up: bounds the time between two deadline checks.
const BATCH: usize = 1024;
/// Longest pause after a partial batch while rows await their commit (see [`linger`]).
const LINGER: Duration = Duration::from_millis(5);

pub(super) fn run(
    rx: &BatchQueue<Msg>,
    writer: SpoolWriter,
    tail: &broadcast::Sender<Arc<TraceRow>>,
    fsync_interval: Duration,
    metrics: &SinkMetrics,
) {
    let mut w = Writer {
        spool: writer,
        tail,
        metrics,
        fsync_interval,
        buf: Vec::with_capacity(8 << 10),
        deadline: None,
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let wait = w
            .deadline
            .map_or(IDLE, |d| d.saturating_duration_since(Instant::now()));
        if rx.pop_batch(&mut batch, BATCH, Some(wait)) == Popped::Closed {
            break;
        }
        let partial = batch.len() < BATCH;
        let stop = w.handle(&mut batch);
        // The batch's rows go to the file now (one write); only the fsync is grouped.
        w.write_out();
        if stop {
            // Refuse (and count, in the handles) what comes later; write what was accepted.
            rx.close();
            while rx.pop_batch(&mut batch, BATCH, None) == Popped::Items {
                w.handle(&mut batch);
            }
            break;
        }
        if w.deadline.is_some_and(|d| Instant::now() >= d) {
            w.commit();
        }
        if partial {
            linger(w.deadline);
        }
    }
    w.commit();
}

/// Under a steady trickle of rows the writer would park after each one, and every row would
/// cost the proxy thread that queues it a futex wake and the writer a context switch. While
/// rows await their commit anyway, the writer pauses briefly instead (not parked, so nothing
/// wakes it) and takes what came meanwhile as one batch and one write. The commit deadline
/// is kept; a flush or shutdown waits at most [`LINGER`] longer.
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
    buf: Vec<u8>,
    /// When the oldest uncommitted row must be committed.
    deadline: Option<Instant>,
}

impl Writer<'_> {
    /// Handles a batch (leaving it empty); returns whether a shutdown was asked for.
    fn handle(&mut self, batch: &mut Vec<Msg>) -> bool {
        let mut stop = false;
        for msg in batch.drain(..) {
            match msg {
                Msg::Row(row) => {
                    self.buf.clear();
                    rowbinary::encode(&row, &mut self.buf);
                    // No subscriber is the normal case; that is not an error.
                    let _ = self.tail.send(row);
                    append(&mut self.spool, &self.buf, self.metrics);
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
        commit(&mut self.spool);
        self.deadline = None;
    }

    fn write_out(&mut self) {
        if let Err(e) = self.spool.write_out() {
            tracing::error!(error = %e, "cannot write to the spool; the rows since the last commit were given up (counted)");
        }
    }
}

fn append(writer: &mut SpoolWriter, payload: &[u8], metrics: &SinkMetrics) {
    if payload.len() > MAX_PAYLOAD {
        tracing::error!(
            bytes = payload.len(),
            "trace row exceeds the spool record limit; dropped"
        );
        metrics.dropped(DropReason::Closed, 1);
        return;
    }
    if let Err(e) = writer.append(payload, now_us()) {
        tracing::error!(error = %e, "cannot write to the spool; trace row lost");
        metrics.dropped(DropReason::Closed, 1);
    }
}

fn commit(writer: &mut SpoolWriter) {
    if let Err(e) = writer.commit() {
        tracing::error!(error = %e, "cannot fsync the spool; the rows since the last commit were given up (counted)");
    }
}

fn now_us() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    u64::try_from(d).unwrap_or(u64::MAX)
}
