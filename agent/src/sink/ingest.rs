//! The spool writer thread: queue → encode → tail subscribers → spool.
//!
//! It runs on its own OS thread so that encoding, writes and fsyncs never
//! touch the proxy's runtime; the proxy only does a non-blocking queue push.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, oneshot};

use super::metrics::{DropReason, SinkMetrics};
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

pub(super) fn run(
    rx: &Receiver<Msg>,
    mut writer: SpoolWriter,
    tail: &broadcast::Sender<Arc<TraceRow>>,
    fsync_interval: Duration,
    metrics: &SinkMetrics,
) {
    let mut buf = Vec::with_capacity(8 << 10);
    let mut deadline: Option<Instant> = None;
    loop {
        let wait = deadline.map_or(IDLE, |d| d.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(Msg::Row(row)) => {
                buf.clear();
                rowbinary::encode(&row, &mut buf);
                // No subscriber is the normal case; that is not an error.
                let _ = tail.send(row);
                append(&mut writer, &buf, metrics);
                if writer.is_dirty() && deadline.is_none() {
                    deadline = Some(Instant::now() + fsync_interval);
                }
            }
            Ok(Msg::Flush(done)) => {
                commit(&mut writer);
                deadline = None;
                let _ = done.send(());
            }
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                commit(&mut writer);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            commit(&mut writer);
            deadline = None;
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
        .unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
