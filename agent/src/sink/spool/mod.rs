//! The durable local spool: every trace row lands here before ClickHouse.
//!
//! Design (after vector's `disk_v2` buffer):
//! - **Segments.** Append-only files `NNNNNNNNNNNNNNNNNNNN.seg` of at most
//!   `max_bytes / 8` (≤ 64 MiB) each, named by an increasing id. One writer
//!   thread appends; the shipper reads. A position is `(segment, offset)`.
//! - **Records.** `[len][crc32c][written_at][payload]` (see [`record`]); the
//!   payload is the row's RowBinary encoding, shipped unchanged.
//! - **Layout header.** Each segment starts with the magic `LTSPOOL1` and one
//!   record listing the columns (name and type, in RowBinary order) its rows
//!   were encoded with (see [`layout`]); the header is fsynced before any row.
//!   A segment without the magic comes from the release before headers and
//!   holds rows of the frozen [`LEGACY_LAYOUT`]. The shipper batches rows of
//!   one layout only and names that layout's columns in the INSERT, so rows
//!   spooled before an upgrade (or downgrade) still insert: columns the layout
//!   lacks take their DEFAULT. Offsets count from the start of the file, header
//!   included. A segment whose header is unreadable is renamed
//!   `NNN.seg.unreadable` (kept, never shipped) with an ERROR and a count.
//! - **Group commit.** The writer buffers appends and every
//!   `fsync_interval_ms` flushes and `fdatasync`s, then publishes the new
//!   committed position. The shipper reads only committed (durable) records.
//! - **Ledger.** A small JSON file (see [`ledger`]) holds the position
//!   ClickHouse acknowledged and the batch in flight. Segments wholly before
//!   the acknowledged position are deleted.
//! - **Recovery.** On open every segment is scanned; at the first torn or
//!   corrupt record the file is truncated (a crash mid-append leaves at most
//!   one torn record, at the tail) and the loss is counted. Writing always
//!   resumes in a fresh segment, so recovered files are never appended to.
//! - **Size cap.** When the segments reach `max_bytes`, `drop_oldest` deletes
//!   the oldest segment (the reader skips past it) and `drop_newest` refuses
//!   new rows; both count the lost rows and log at ERROR.

mod layout;
mod ledger;
mod reader;
mod record;
mod recover;
mod segment;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use self::layout::{CURRENT as CURRENT_LAYOUT, LEGACY as LEGACY_LAYOUT, Layout, LayoutError};
pub use self::ledger::{Inflight, Ledger, LedgerState};
pub use self::reader::{Batch, SpoolReader};
pub use self::record::{HEADER_LEN, MAX_PAYLOAD, Next, frame, read_next};
pub use self::writer::SpoolWriter;
use super::config::SpoolConfig;
use super::metrics::SinkMetrics;

/// A place in the spool: byte `offset` of segment `segment`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// Segment id.
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool I/O on {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

impl SpoolError {
    fn io(path: &Path, e: std::io::Error) -> Self {
        Self::Io(path.to_path_buf(), e)
    }

    /// How a row lost to this error is counted (`NoSpace` for a full disk or quota).
    pub fn drop_reason(&self) -> super::metrics::DropReason {
        match self {
            Self::Io(_, e) => writer::drop_reason(e),
        }
    }
}

/// Per-segment bookkeeping.
#[derive(Debug, Clone, Copy, Default)]
struct SegMeta {
    /// Bytes of records (the layout header is not counted: it holds no rows).
    bytes: u64,
    records: u64,
    /// Bytes of the layout header before the records; 0 for a legacy segment.
    header: u64,
}

#[derive(Debug)]
struct State {
    segments: BTreeMap<u64, SegMeta>,
    total_bytes: u64,
    acked: Position,
}

/// State shared by the writer and the reader.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    committed: watch::Sender<Position>,
    metrics: SinkMetrics,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Deletes segments wholly before `acked` and records the new position.
    fn release(&self, acked: Position) {
        let mut st = self.lock();
        st.acked = acked;
        let done: Vec<u64> = st
            .segments
            .range(..acked.segment)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let meta = st.segments.remove(&id).unwrap_or_default();
            st.total_bytes -= meta.bytes;
            remove_segment(&self.dir, id);
        }
        self.metrics
            .spool_bytes
            .set(i64::try_from(st.total_bytes).unwrap_or(i64::MAX));
    }

    /// Smallest segment id still on disk at or after `id`.
    fn next_segment_from(&self, id: u64) -> Option<u64> {
        self.lock().segments.range(id..).next().map(|(id, _)| *id)
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn remove_segment(dir: &Path, id: u64) {
    let path = segment_path(dir, id);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not delete a shipped spool segment");
    }
}

/// Now in µs since the Unix epoch.
fn now_us() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SpoolError::io(dir, e))
}

/// Opens (recovering) the spool in `dir` and returns its two halves.
pub fn open(
    dir: &Path,
    cfg: &SpoolConfig,
    metrics: &SinkMetrics,
) -> Result<(SpoolWriter, SpoolReader), SpoolError> {
    std::fs::create_dir_all(dir).map_err(|e| SpoolError::io(dir, e))?;
    // Rows hold prompts and responses: only the agent's user may read them.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| SpoolError::io(dir, e))?;
    let ledger = Ledger::open(dir)?;
    let (segments, last) = recover::recover(dir, ledger.state.acked.segment, metrics)?;
    let next_id = last
        .map_or(ledger.state.acked.segment, |id| id + 1)
        .max(ledger.state.acked.segment)
        .max(1);
    let total_bytes = segments.values().map(|m| m.bytes).sum();
    metrics
        .spool_bytes
        .set(i64::try_from(total_bytes).unwrap_or(i64::MAX));
    let (committed, _) = watch::channel(Position {
        segment: next_id,
        offset: 0,
    });
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        state: Mutex::new(State {
            segments,
            total_bytes,
            acked: ledger.state.acked,
        }),
        committed,
        metrics: metrics.clone(),
    });
    let writer = SpoolWriter::create(Arc::clone(&shared), next_id, cfg)?;
    let reader = SpoolReader::new(shared, ledger);
    Ok((writer, reader))
}

#[cfg(test)]
mod tests;
