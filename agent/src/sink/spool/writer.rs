//! The append side of the spool: one writer, group commit, size cap.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout::CURRENT;
use super::record::{frame, framed_len};
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
    file: BufWriter<File>,
    segment: u64,
    offset: u64,
    /// Bytes of the segment's layout header: where its rows start.
    header_len: u64,
    segment_bytes: u64,
    max_bytes: u64,
    policy: FullPolicy,
    dirty: bool,
    frame_buf: Vec<u8>,
    last_full_log: Option<Instant>,
    /// End of the last fsynced record of the active segment.
    committed_offset: u64,
    /// Records appended to the active segment since the last commit.
    uncommitted_records: u64,
    /// Records still in the user-space buffer (not handed to the kernel yet).
    unwritten_records: u64,
    /// A write or fsync failed: the active segment may end in a torn record, or the kernel
    /// may have dropped dirty pages, so nothing past `committed_offset` can be trusted.
    torn: bool,
    /// Test hook: the next frame is half written, then the write fails.
    #[cfg(test)]
    pub(super) fail_next_write: bool,
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
            file: BufWriter::with_capacity(256 << 10, file),
            segment,
            offset: header_len,
            header_len,
            segment_bytes: (cfg.max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            max_bytes: cfg.max_bytes,
            policy: cfg.full_policy,
            dirty: false,
            frame_buf: Vec::new(),
            last_full_log: None,
            committed_offset: header_len,
            uncommitted_records: 0,
            unwritten_records: 0,
            torn: false,
            #[cfg(test)]
            fail_next_write: false,
        })
    }

    /// Appends one record; `Ok(false)` means the spool was full and the row
    /// was dropped (counted). The record is in the file after [`Self::write_out`] and
    /// durable after [`Self::commit`].
    pub fn append(&mut self, payload: &[u8], written_at_us: u64) -> Result<bool, SpoolError> {
        if self.torn {
            self.abandon_uncommitted()?;
        }
        let len = framed_len(payload.len());
        if self.offset > self.header_len && self.offset + len > self.segment_bytes {
            self.roll()?;
        }
        if !self.make_room(len) {
            return Ok(false);
        }
        self.frame_buf.clear();
        frame(payload, written_at_us, &mut self.frame_buf);
        if let Err(e) = self.write_frame() {
            let path = segment_path(&self.shared.dir, self.segment);
            self.torn = true;
            // Best effort now; the next append or commit retries.
            let _ = self.abandon_uncommitted();
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
        if self.torn {
            self.abandon_uncommitted()?;
        }
        if self.unwritten_records == 0 {
            return Ok(());
        }
        if let Err(e) = self.file.flush() {
            let path = segment_path(&self.shared.dir, self.segment);
            self.torn = true;
            let _ = self.abandon_uncommitted();
            return Err(SpoolError::io(&path, e));
        }
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
        if self.torn {
            self.abandon_uncommitted()?;
        }
        if !self.dirty {
            return Ok(());
        }
        self.write_out()?;
        let path = segment_path(&self.shared.dir, self.segment);
        if let Err(e) = self.file.get_ref().sync_data() {
            // After a failed fsync the kernel may have dropped the dirty pages and a retry
            // would report success: the uncommitted records are given up instead.
            self.torn = true;
            let _ = self.abandon_uncommitted();
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
        let (file, header_len) = open_segment(&self.shared, next)?;
        self.file = BufWriter::with_capacity(256 << 10, file);
        self.segment = next;
        self.offset = header_len;
        self.header_len = header_len;
        self.committed_offset = header_len;
        self.uncommitted_records = 0;
        self.shared.committed.send_replace(Position {
            segment: next,
            offset: 0,
        });
        Ok(())
    }

    fn write_frame(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_write) {
            // A disk that takes half a record and then fails.
            let half = self.frame_buf.len() / 2;
            self.file.write_all(&self.frame_buf[..half])?;
            self.file.flush()?;
            return Err(std::io::Error::other("injected write failure"));
        }
        self.file.write_all(&self.frame_buf)
    }

    /// After a failed write or fsync: cuts the active segment back to its last committed
    /// record (so no half record is ever read as data), gives up the records after it
    /// (counted, logged at ERROR), and continues in a fresh segment.
    fn abandon_uncommitted(&mut self) -> Result<(), SpoolError> {
        let old = self.segment;
        let next = old + 1;
        let (file, header_len) = open_segment(&self.shared, next)?;
        let old_writer =
            std::mem::replace(&mut self.file, BufWriter::with_capacity(256 << 10, file));
        // Bytes still buffered belong to the records given up below.
        let (old_file, _unwritten) = old_writer.into_parts();
        let cut = old_file
            .set_len(self.committed_offset)
            .and_then(|()| old_file.sync_data());
        let lost_bytes = self.offset - self.committed_offset;
        let lost_rows = self.uncommitted_records;
        {
            let mut st = self.shared.lock();
            if let Some(meta) = st.segments.get_mut(&old) {
                meta.bytes = meta.bytes.saturating_sub(lost_bytes);
                meta.records = meta.records.saturating_sub(lost_rows);
            }
            st.total_bytes = st.total_bytes.saturating_sub(lost_bytes);
            self.shared
                .metrics
                .spool_bytes
                .set(i64::try_from(st.total_bytes).unwrap_or(i64::MAX));
        }
        self.segment = next;
        self.offset = header_len;
        self.header_len = header_len;
        self.committed_offset = header_len;
        self.uncommitted_records = 0;
        self.unwritten_records = 0;
        self.dirty = false;
        self.torn = false;
        self.shared.committed.send_replace(Position {
            segment: next,
            offset: 0,
        });
        if lost_rows > 0 {
            self.shared.metrics.dropped(DropReason::Closed, lost_rows);
        }
        let path = segment_path(&self.shared.dir, old);
        match cut {
            Ok(()) => tracing::error!(path = %path.display(), lost_rows,
                "a spool write failed: cut the segment back to its last committed record and gave up the rows after it"),
            // The reader's checksums still catch a torn tail left behind.
            Err(e) => tracing::error!(path = %path.display(), lost_rows, error = %e,
                "a spool write failed and the segment could not be cut back; its torn tail will be skipped as corrupt"),
        }
        Ok(())
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
    file.write_all(&header)
        .and_then(|()| file.sync_data())
        .map_err(|e| SpoolError::io(&path, e))?;
    sync_dir(&shared.dir)?;
    let len = header.len() as u64;
    shared.lock().segments.entry(id).or_default().header = len;
    Ok((file, len))
}
