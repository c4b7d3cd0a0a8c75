//! Opening an existing spool: scan segments, truncate torn tails.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::BufReader;
use std::path::Path;

use super::layout::{LayoutError, read_head};
use super::record::{Next, framed_len, read_next};
use super::{SegMeta, SpoolError, remove_segment, segment_path};
use crate::sink::metrics::{DropReason, SinkMetrics};

/// Lists segments, deletes those wholly before `acked_segment` and truncates
/// each remaining one at its first torn or corrupt record. Also returns the
/// highest id found, so that no id (of a segment set aside) is used twice.
pub(super) fn recover(
    dir: &Path,
    acked_segment: u64,
    metrics: &SinkMetrics,
) -> Result<(BTreeMap<u64, SegMeta>, Option<u64>), SpoolError> {
    let mut ids: Vec<u64> = fs::read_dir(dir)
        .map_err(|e| SpoolError::io(dir, e))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
        .collect();
    ids.sort_unstable();
    let last = ids.last().copied();
    let mut segments = BTreeMap::new();
    for id in ids {
        if id < acked_segment {
            remove_segment(dir, id);
            continue;
        }
        if let Some(meta) = scan(dir, id, Some(id) == last, metrics)? {
            segments.insert(id, meta);
        }
    }
    Ok((segments, last))
}

/// Suffix of a segment set aside because its layout header is unreadable.
const UNREADABLE: &str = "unreadable";

/// A segment whose rows cannot be interpreted: keep the bytes for an operator,
/// out of the shipper's way.
fn set_aside(
    dir: &Path,
    id: u64,
    is_last: bool,
    error: &LayoutError,
    metrics: &SinkMetrics,
) -> Result<(), SpoolError> {
    let path = segment_path(dir, id);
    if is_last && matches!(error, LayoutError::Torn(_)) {
        // The header is synced before any row: a torn one is a crash while creating the
        // newest segment, which therefore holds no rows.
        tracing::warn!(path = %path.display(), %error, "removing a spool segment whose creation was interrupted");
        remove_segment(dir, id);
        return Ok(());
    }
    let aside = path.with_extension(format!("seg.{UNREADABLE}"));
    tracing::error!(path = %path.display(), moved_to = %aside.display(), %error,
        "spool segment has an unreadable column layout header; its rows are set aside, not shipped");
    metrics.dropped(DropReason::Corrupt, 1);
    fs::rename(&path, &aside).map_err(|e| SpoolError::io(&path, e))
}

/// The segment's bookkeeping, or `None` when it was removed or set aside.
fn scan(
    dir: &Path,
    id: u64,
    is_last: bool,
    metrics: &SinkMetrics,
) -> Result<Option<SegMeta>, SpoolError> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| SpoolError::io(&path, e))?;
    let file_len = file.metadata().map_err(|e| SpoolError::io(&path, e))?.len();
    let mut r = BufReader::with_capacity(1 << 20, &file);
    let header = match read_head(&mut r).map_err(|e| SpoolError::io(&path, e))? {
        Ok(head) => head.layout_and_start().1,
        Err(error) => {
            drop(r);
            drop(file);
            set_aside(dir, id, is_last, &error, metrics)?;
            return Ok(None);
        }
    };
    let mut payload = Vec::new();
    let mut meta = SegMeta {
        header,
        ..SegMeta::default()
    };
    loop {
        match read_next(&mut r, &mut payload).map_err(|e| SpoolError::io(&path, e))? {
            Next::Record { .. } => {
                meta.records += 1;
                meta.bytes += framed_len(payload.len());
            }
            Next::End => break,
            Next::Torn(why) => {
                let lost = file_len - header - meta.bytes;
                if is_last {
                    tracing::warn!(path = %path.display(), offset = header + meta.bytes, lost_bytes = lost, reason = why,
                        "truncating a torn record at the end of the spool (an interrupted write)");
                } else {
                    tracing::error!(path = %path.display(), offset = header + meta.bytes, lost_bytes = lost, reason = why,
                        "spool segment is corrupt; truncating it and losing the rest of the segment");
                }
                metrics.dropped(DropReason::Corrupt, 1);
                file.set_len(header + meta.bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| SpoolError::io(&path, e))?;
                break;
            }
        }
    }
    Ok(Some(meta))
}
