//! The append side of the spool: one writer, group commit, size cap.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout::CURRENT;
use super::record::{framed_len, header};
use super::segment::{SegmentFile, discard_buffered};
use super::{Position, SegMeta, Shared, SpoolError, remove_segment, segment_path, sync_dir};
use crate::sink::config::{FullPolicy, SpoolConfig};
use crate::sink::metrics::DropReason;

const MAX_SEGMENT_BYTES: u64 = 64 << 20;
const MIN_SEGMENT_BYTES: u64 = 64 << 10;
/// Data loss is logged at ERROR, but at most this often.
const FULL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Appends records; see the module docs of `spool` for the design.
#[derive(Debug)]
pub struct SpoolWriter {
    shared: Arc<Shared>,
    file: BufWriter<SegmentFile>,
    segment: u64,
    offset: u64,
    /// Bytes of the segment's layout header: where its rows start.
    header_len: u64,
    segment_bytes: u64,
    max_bytes: u64,
    policy: FullPolicy,
    dirty: bool,
    last_full_log: Option<Instant>,
    /// End of the last fsynced record of the active segment.
    committed_offset: u64,
    /// End of the last record handed to the kernel (`write(2)` done) in the active segment.
    written_offset: u64,
    /// Records appended to the active segment since the last commit.
    uncommitted_records: u64,
    /// Records still in the user-space buffer (not handed to the kernel yet).
    unwritten_records: u64,
    /// A write or fsync failed and the active segment must be cut back and left.
    torn: Option<Tear>,
    /// The active segment has been cut back already; only a fresh segment is missing (its
    /// creation failed too, e.g. on a full disk) and is retried on the next append or commit.
    cut: bool,
    /// How the rows lost to the last failure are counted.
    io_reason: DropReason,
    /// Test hook: the next frame is half written, then the write fails with this error.
    #[cfg(test)]
    pub(in crate::sink) fail_next_write: Option<std::io::ErrorKind>,
    /// Test hook: this many segment creations fail with "no space".
    #[cfg(test)]
    pub(super) fail_opens: u32,
}

/// What a failure leaves trustworthy in the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tear {
    /// A `write(2)` failed (disk full, I/O error): the records written before it are intact
    /// in the page cache; only the ones after them (maybe half written) are given up.
    Write,
    /// An fsync failed: the kernel may have dropped dirty pages, so nothing past the last
    /// commit can be trusted.
    Sync,
}

impl SpoolWriter {
    pub(super) fn create(
        shared: Arc<Shared>,
        segment: u64,
        cfg: &SpoolConfig,
    ) -> Result<Self, SpoolError> {
        let (file, header_len) = open_segment(&shared, segment)?;
        Ok(Self {
            shared,
            file: SegmentFile::buffered(file),
            segment,
            offset: header_len,
            header_len,
            segment_bytes: (cfg.max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            max_bytes: cfg.max_bytes,
            policy: cfg.full_policy,
            dirty: false,
            last_full_log: None,
            committed_offset: header_len,
            written_offset: header_len,
            uncommitted_records: 0,
            unwritten_records: 0,
            torn: None,
            cut: false,
            io_reason: DropReason::IoError,
            #[cfg(test)]
            fail_next_write: None,
            #[cfg(test)]
            fail_opens: 0,
        })
    }

    /// Appends one record; `Ok(false)` means the spool was full and the row
    /// was dropped (counted). The record is in the file after [`Self::write_out`] and
    /// durable after [`Self::commit`].
    pub fn append(&mut self, payload: &[u8], written_at_us: u64) -> Result<bool, SpoolError> {
        self.recover_from_tear()?;
        let len = framed_len(payload.len());
        if self.offset > self.header_len && self.offset + len > self.segment_bytes {
            self.roll()?;
        }
        if !self.make_room(len) {
            return Ok(false);
        }
        if let Err(e) = self.write_frame(payload, written_at_us) {
            let path = segment_path(&self.shared.dir, self.segment);
            self.tear(Tear::Write, &e);
            // Best effort now; the next append or commit retries.
            let _ = self.recover_from_tear();
            return Err(SpoolError::io(&path, e));
        }
        self.offset += len;
        self.uncommitted_records += 1;
        self.unwritten_records += 1;
        self.dirty = true;
        let mut st = self.shared.lock();
        let meta = st.segments.entry(self.segment).or_default();
        meta.bytes += len;
        meta.records += 1;
        st.total_bytes += len;
        self.shared
            .metrics
            .spool_bytes
            .set(i64::try_from(st.total_bytes).unwrap_or(i64::MAX));
        Ok(true)
    }

    /// Hands the buffered records to the kernel (`write(2)`, no fsync): from here a crash of
    /// the agent alone (SIGKILL, OOM kill, abort) loses none of them, only a crash of the
    /// machine before the next [`Self::commit`] can. Cheap enough to call after each batch.
    pub fn write_out(&mut self) -> Result<(), SpoolError> {
        self.recover_from_tear()?;
        if self.unwritten_records == 0 {
            return Ok(());
        }
        if let Err(e) = self.flush_buffer() {
            let path = segment_path(&self.shared.dir, self.segment);
            self.tear(Tear::Write, &e);
            let _ = self.recover_from_tear();
            return Err(SpoolError::io(&path, e));
        }
        self.written_offset = self.offset;
        self.shared
            .metrics
            .rows_spooled
            .inc_by(std::mem::take(&mut self.unwritten_records));
        Ok(())
    }

    /// Whether appended records await a commit.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Flushes and fsyncs, then lets the shipper see the new records.
    pub fn commit(&mut self) -> Result<(), SpoolError> {
        self.recover_from_tear()?;
        if !self.dirty {
            return Ok(());
        }
        self.write_out()?;
        let path = segment_path(&self.shared.dir, self.segment);
        if let Err(e) = self.file.get_ref().file().sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages and a retry
            // would report success: the uncommitted records are given up instead.
            self.tear(Tear::Sync, &e);
            let _ = self.recover_from_tear();
            return Err(SpoolError::io(&path, e));
        }
        self.committed_offset = self.offset;
        self.uncommitted_records = 0;
        self.dirty = false;
        self.shared.committed.send_replace(Position {
            segment: self.segment,
            offset: self.offset,
        });
        Ok(())
    }

    fn roll(&mut self) -> Result<(), SpoolError> {
        self.commit()?;
        let next = self.segment + 1;
        let (file, header_len) = self.open_next()?;
        self.file = SegmentFile::buffered(file);
        self.segment = next;
        self.offset = header_len;
        self.header_len = header_len;
        self.committed_offset = header_len;
        self.written_offset = header_len;
        self.uncommitted_records = 0;
        self.shared.committed.send_replace(Position {
            segment: next,
            offset: 0,
        });
        Ok(())
    }

    fn open_next(&mut self) -> Result<(File, u64), SpoolError> {
        #[cfg(test)]
        if self.fail_opens > 0 {
            self.fail_opens -= 1;
            let path = segment_path(&self.shared.dir, self.segment + 1);
            return Err(SpoolError::io(&path, no_space()));
        }
        open_segment(&self.shared, self.segment + 1)
    }

    fn flush_buffer(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(kind) = self.fail_next_write.take() {
            // A disk that takes part of the buffer and then fails.
            let buffered = self.file.buffer().len();
            let part = self.file.buffer()[..buffered / 2].to_vec();
            self.file.get_mut().write_all(&part)?;
            return Err(injected(kind));
        }
        self.file.flush()
    }

    fn write_frame(&mut self, payload: &[u8], written_at_us: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(kind) = self.fail_next_write.take() {
            // A disk that takes half a record and then fails.
            let mut framed = Vec::new();
            super::record::frame(payload, written_at_us, &mut framed);
            self.file.write_all(&framed[..framed.len() / 2])?;
            self.file.flush()?;
            return Err(injected(kind));
        }
        // Straight into the file's buffer: one copy of the payload fewer than framing first.
        self.file.write_all(&header(payload, written_at_us))?;
        self.file.write_all(payload)
    }

    /// After a failed write or fsync: cuts the active segment back to what can be trusted (so
    /// no half record is ever read as data), gives up the records after it (counted, logged at
    /// ERROR), and continues in a fresh segment. When the fresh segment cannot be created
    /// (a full disk), the writer stays torn, refusing rows (counted by the caller), and tries
    /// again on the next append or commit: it recovers by itself once space comes back.
    fn recover_from_tear(&mut self) -> Result<(), SpoolError> {
        let Some(tear) = self.torn else {
            return Ok(());
        };
        if !std::mem::replace(&mut self.cut, true) {
            self.cut_back(tear);
        }
        let (file, header_len) = self.open_next()?;
        // The cut left the old buffer empty: dropping it writes nothing.
        self.file = SegmentFile::buffered(file);
        self.segment += 1;
        self.offset = header_len;
        self.header_len = header_len;
        self.committed_offset = header_len;
        self.written_offset = header_len;
        self.uncommitted_records = 0;
        self.unwritten_records = 0;
        self.dirty = false;
        self.torn = None;
        self.cut = false;
        self.shared.committed.send_replace(Position {
            segment: self.segment,
            offset: 0,
        });
        tracing::warn!(
            segment = self.segment,
            "the spool writes again, in a fresh segment"
        );
        Ok(())
    }

    /// Truncates the active segment after its last trustworthy record and fsyncs it, so the
    /// records kept are committed (the shipper may read them); accounts for the rest.
    fn cut_back(&mut self, tear: Tear) {
        // Bytes still buffered belong to the records given up: drained to nowhere, so
        // neither a later flush nor the buffer's drop (at shutdown, should the writer stay
        // torn) writes them after the cut.
        discard_buffered(&mut self.file);
        let (mut keep, mut lost_rows) = match tear {
            Tear::Write => (self.written_offset, self.unwritten_records),
            Tear::Sync => (self.committed_offset, self.uncommitted_records),
        };
        let file = self.file.get_ref().file();
        let cut_to = |at: u64| file.set_len(at).and_then(|()| file.sync_data());
        let mut cut = cut_to(keep);
        if cut.is_err() && tear == Tear::Write {
            // The kept records could not be made durable either: fall back to the last commit.
            keep = self.committed_offset;
            lost_rows = self.uncommitted_records;
            cut = cut_to(keep);
        }
        let lost_bytes = self.offset - keep;
        {
            let mut st = self.shared.lock();
            if let Some(meta) = st.segments.get_mut(&self.segment) {
                meta.bytes = meta.bytes.saturating_sub(lost_bytes);
                meta.records = meta.records.saturating_sub(lost_rows);
            }
            st.total_bytes = st.total_bytes.saturating_sub(lost_bytes);
            self.shared
                .metrics
                .spool_bytes
                .set(i64::try_from(st.total_bytes).unwrap_or(i64::MAX));
        }
        self.offset = keep;
        self.dirty = false;
        self.unwritten_records = 0;
        self.uncommitted_records = 0;
        if cut.is_ok() {
            self.committed_offset = keep;
            self.shared.committed.send_replace(Position {
                segment: self.segment,
                offset: keep,
            });
        }
        if lost_rows > 0 {
            self.shared.metrics.dropped(self.io_reason(), lost_rows);
        }
        let path = segment_path(&self.shared.dir, self.segment);
        match cut {
            Ok(()) => tracing::error!(path = %path.display(), lost_rows, ?tear,
                "a spool write failed: cut the segment back to its last intact record and gave up the rows after it"),
            // The reader's checksums still catch a torn tail left behind.
            Err(e) => tracing::error!(path = %path.display(), lost_rows, error = %e,
                "a spool write failed and the segment could not be cut back; its torn tail will be skipped as corrupt"),
        }
    }

    /// The drop reason of rows lost to the last I/O failure.
    fn io_reason(&self) -> DropReason {
        self.io_reason
    }

    /// Marks the active segment torn by `e`.
    fn tear(&mut self, tear: Tear, e: &std::io::Error) {
        self.torn = Some(tear);
        self.io_reason = drop_reason(e);
    }

    /// Applies the full policy until `len` more bytes fit; false drops the row.
    fn make_room(&mut self, len: u64) -> bool {
        let mut st = self.shared.lock();
        let mut lost_rows = 0;
        while st.total_bytes + len > self.max_bytes {
            let oldest = st
                .segments
                .keys()
                .next()
                .copied()
                .filter(|id| *id != self.segment);
            let Some(id) = oldest.filter(|_| self.policy == FullPolicy::DropOldest) else {
                drop(st);
                self.shared.metrics.dropped(DropReason::SpoolFull, 1);
                self.log_full(1);
                return false;
            };
            let meta = st.segments.remove(&id).unwrap_or_default();
            st.total_bytes -= meta.bytes;
            lost_rows += unacked_records(id, meta, st.acked);
            remove_segment(&self.shared.dir, id);
        }
        drop(st);
        if lost_rows > 0 {
            self.shared
                .metrics
                .dropped(DropReason::SpoolFull, lost_rows);
            self.log_full(lost_rows);
        }
        true
    }

    fn log_full(&mut self, rows: u64) {
        if self
            .last_full_log
            .is_none_or(|t| t.elapsed() >= FULL_LOG_EVERY)
        {
            self.last_full_log = Some(Instant::now());
            tracing::error!(
                policy = ?self.policy,
                max_bytes = self.max_bytes,
                lost_rows = rows,
                total_lost = self.shared.metrics.dropped_count(DropReason::SpoolFull),
                "spool is full: trace rows are being dropped (ClickHouse unreachable or too slow?)"
            );
        }
    }
}

/// How rows lost to the I/O error `e` are counted.
pub(in crate::sink) fn drop_reason(e: &std::io::Error) -> DropReason {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => DropReason::NoSpace,
        _ => DropReason::IoError,
    }
}

#[cfg(test)]
fn injected(kind: std::io::ErrorKind) -> std::io::Error {
    std::io::Error::new(kind, "injected write failure")
}

#[cfg(test)]
fn no_space() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::StorageFull)
}

/// Rows of a dropped segment that ClickHouse had not acknowledged; for the
/// segment holding the acknowledged position, estimated by bytes.
fn unacked_records(id: u64, meta: SegMeta, acked: Position) -> u64 {
    match id.cmp(&acked.segment) {
        std::cmp::Ordering::Less => 0,
        std::cmp::Ordering::Greater => meta.records,
        std::cmp::Ordering::Equal if meta.bytes == 0 => 0,
        std::cmp::Ordering::Equal => {
            let left = (meta.header + meta.bytes)
                .saturating_sub(acked.offset)
                .min(meta.bytes);
            u64::try_from(u128::from(meta.records) * u128::from(left) / u128::from(meta.bytes))
                .unwrap_or(meta.records)
        }
    }
}

/// Creates segment `id` with the current layout's header, durable before any
/// row is appended (and before the reader can see the segment); returns the
/// file and the header's length.
fn open_segment(shared: &Shared, id: u64) -> Result<(File, u64), SpoolError> {
    let path = segment_path(&shared.dir, id);
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| SpoolError::io(&path, e))?;
    let mut header = Vec::new();
    CURRENT.write_header(super::now_us(), &mut header);
    if let Err(e) = file.write_all(&header).and_then(|()| file.sync_data()) {
        // Leave no half-made segment behind (a full disk): its id is retried later, and
        // `create_new` would fail on it forever.
        drop(file);
        remove_segment(&shared.dir, id);
        return Err(SpoolError::io(&path, e));
    }
    sync_dir(&shared.dir)?;
    let len = header.len() as u64;
    shared.lock().segments.entry(id).or_default().header = len;
    Ok((file, len))
}
