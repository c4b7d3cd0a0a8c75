//! The read side of the spool: batches of committed records, acknowledgements.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::sync::Arc;

use tokio::sync::watch;

use super::layout::{Layout, read_head};
use super::ledger::{Inflight, Ledger};
use super::record::{Next, framed_len, read_next};
use super::{Position, Shared, SpoolError, segment_path};
use crate::sink::metrics::DropReason;

/// Consecutive records read from the spool: concatenated RowBinary rows, all
/// of one column layout.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// The column layout of every row; `None` while empty.
    pub layout: Option<Arc<Layout>>,
    /// True when the next record has another layout: nothing more can join.
    pub sealed: bool,
    /// The rows' RowBinary bytes, back to back.
    pub data: Vec<u8>,
    /// End offset in `data` of each row.
    pub row_ends: Vec<usize>,
    /// Position of the first record.
    pub start: Position,
    /// Position after the last record.
    pub end: Position,
    /// When the oldest row was written to the spool (µs since epoch).
    pub oldest_written_at_us: Option<u64>,
}

impl Batch {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.row_ends.len()
    }

    /// Whether the batch holds no rows.
    pub fn is_empty(&self) -> bool {
        self.row_ends.is_empty()
    }
}

/// Reads committed records in order and records acknowledgements.
#[derive(Debug)]
pub struct SpoolReader {
    shared: Arc<Shared>,
    ledger: Ledger,
    pos: Position,
    file: Option<BufReader<File>>,
    /// Layout of the rows of `file`.
    layout: Option<Arc<Layout>>,
    /// Layouts seen, so that equal layouts are one shared value.
    known: Vec<Arc<Layout>>,
    payload: Vec<u8>,
    committed: watch::Receiver<Position>,
}

impl SpoolReader {
    pub(super) fn new(shared: Arc<Shared>, ledger: Ledger) -> Self {
        let committed = shared.committed.subscribe();
        let pos = ledger.state.acked;
        Self {
            shared,
            ledger,
            pos,
            file: None,
            layout: None,
            known: Vec::new(),
            payload: Vec::new(),
            committed,
        }
    }

    /// Everything up to this position is durable and may be read.
    pub fn committed(&self) -> Position {
        *self.committed.borrow()
    }

    /// A receiver that changes whenever more records are committed.
    pub fn watch_committed(&self) -> watch::Receiver<Position> {
        self.committed.clone()
    }

    /// The unacknowledged batch from before a restart, if any.
    pub fn inflight(&self) -> Option<Inflight> {
        self.ledger.state.inflight
    }

    /// Random id of this spool, for deduplication tokens.
    pub fn spool_id(&self) -> uuid::Uuid {
        self.ledger.state.spool_id
    }

    /// Reads records into `batch` while under the limits and before `limit`.
    pub fn fill(
        &mut self,
        batch: &mut Batch,
        max_rows: usize,
        max_bytes: usize,
        limit: Position,
    ) -> Result<(), SpoolError> {
        self.skip_dropped();
        if batch.is_empty() {
            batch.start = self.pos;
        }
        while batch.rows() < max_rows && batch.data.len() < max_bytes && self.pos < limit {
            if !self.open_current(limit)? {
                break;
            }
            if self.file.is_none() {
                continue; // its header was unreadable: skipped
            }
            let layout = self.layout.as_ref().expect("set with the file");
            match &batch.layout {
                Some(l) if !Arc::ptr_eq(l, layout) => {
                    if !batch.is_empty() {
                        batch.sealed = true;
                        break;
                    }
                    batch.layout = Some(Arc::clone(layout));
                }
                Some(_) => {}
                None => batch.layout = Some(Arc::clone(layout)),
            }
            let file = self.file.as_mut().expect("opened above");
            let next = read_next(file, &mut self.payload);
            let path = || segment_path(&self.shared.dir, self.pos.segment);
            match next.map_err(|e| SpoolError::io(&path(), e))? {
                Next::Record { written_at_us } => {
                    batch.data.extend_from_slice(&self.payload);
                    batch.row_ends.push(batch.data.len());
                    let oldest = batch.oldest_written_at_us.get_or_insert(written_at_us);
                    *oldest = (*oldest).min(written_at_us);
                    self.pos.offset += framed_len(self.payload.len());
                }
                Next::End if self.pos.segment < limit.segment => self.next_segment(),
                Next::End => break,
                Next::Torn(why) => {
                    // Committed data failed its checksum: the disk changed under us.
                    tracing::error!(path = %path().display(), offset = self.pos.offset, reason = why,
                        "spool record is corrupt; skipping the rest of its segment");
                    self.shared.metrics.dropped(DropReason::Corrupt, 1);
                    if self.pos.segment < limit.segment {
                        self.next_segment();
                    } else {
                        self.seek(limit);
                    }
                }
            }
        }
        batch.end = self.pos;
        Ok(())
    }

    /// Records that `batch` is about to be sent; returns its sequence number
    /// (the same as before a restart when it is the replayed in-flight batch).
    pub fn begin(&mut self, batch: &Batch) -> Result<u64, SpoolError> {
        let st = &mut self.ledger.state;
        if let Some(inf) = st
            .inflight
            .filter(|i| i.start == batch.start && i.end == batch.end)
        {
            return Ok(inf.seq);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.inflight = Some(Inflight {
            seq,
            start: batch.start,
            end: batch.end,
        });
        self.ledger.save()?;
        Ok(seq)
    }

    /// Records that everything before `end` is in ClickHouse (or dead-lettered)
    /// and deletes segments no longer needed.
    pub fn ack(&mut self, end: Position) -> Result<(), SpoolError> {
        self.ledger.state.acked = end;
        self.ledger.state.inflight = None;
        self.ledger.save()?;
        self.shared.release(end);
        Ok(())
    }

    /// Acknowledges the read position when reading moved past records that
    /// need no shipping (segment ends), so their segments can be deleted.
    pub fn ack_if_advanced(&mut self) -> Result<(), SpoolError> {
        if self.ledger.state.inflight.is_none() && self.pos > self.ledger.state.acked {
            self.ack(self.pos)?;
        }
        Ok(())
    }

    /// Moves the read position (used to replay from the acknowledged position).
    pub fn seek(&mut self, pos: Position) {
        self.pos = pos;
        self.file = None;
        self.layout = None;
    }

    fn next_segment(&mut self) {
        self.seek(Position {
            segment: self.pos.segment + 1,
            offset: 0,
        });
    }

    /// If the writer dropped the segment we were in (size cap), jump ahead.
    fn skip_dropped(&mut self) {
        if let Some(first) = self.shared.next_segment_from(0)
            && first > self.pos.segment
        {
            self.seek(Position {
                segment: first,
                offset: 0,
            });
        }
    }

    /// Opens the segment at the read position (or the next one on disk) and
    /// reads its layout; false when there is none. A segment whose header
    /// turned unreadable since it was opened for recovery is skipped (the file
    /// stays `None` and the position moves on).
    fn open_current(&mut self, limit: Position) -> Result<bool, SpoolError> {
        if self.file.is_none() {
            let Some(id) = self.shared.next_segment_from(self.pos.segment) else {
                return Ok(false);
            };
            if id != self.pos.segment {
                self.pos = Position {
                    segment: id,
                    offset: 0,
                };
            }
            let path = segment_path(&self.shared.dir, id);
            let mut f = BufReader::with_capacity(
                1 << 20,
                File::open(&path).map_err(|e| SpoolError::io(&path, e))?,
            );
            let head = read_head(&mut f).map_err(|e| SpoolError::io(&path, e))?;
            let (layout, start) = match head {
                Ok(head) => head.layout_and_start(),
                Err(error) => {
                    // Checked at open: the disk changed under us.
                    tracing::error!(path = %path.display(), %error,
                        "spool segment header is corrupt; skipping the segment");
                    self.shared.metrics.dropped(DropReason::Corrupt, 1);
                    if self.pos.segment < limit.segment {
                        self.next_segment();
                    } else {
                        self.seek(limit);
                    }
                    return Ok(true);
                }
            };
            self.pos.offset = self.pos.offset.max(start);
            f.seek(SeekFrom::Start(self.pos.offset))
                .map_err(|e| SpoolError::io(&path, e))?;
            self.layout = Some(self.intern(layout));
            self.file = Some(f);
        }
        Ok(true)
    }

    /// One shared value per distinct layout, so batches compare them by pointer.
    fn intern(&mut self, layout: Arc<Layout>) -> Arc<Layout> {
        if let Some(known) = self.known.iter().find(|k| ***k == *layout) {
            return Arc::clone(known);
        }
        self.known.push(Arc::clone(&layout));
        layout
    }
}
