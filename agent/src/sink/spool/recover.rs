//! Opening an existing spool: scan segments, truncate torn tails.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::BufReader;
use std::path::Path;

use super::record::{Next, framed_len, read_next};
use super::{SegMeta, SpoolError, remove_segment, segment_path};
use crate::sink::metrics::{DropReason, SinkMetrics};

/// Lists segments, deletes those wholly before `acked_segment` and truncates
/// each remaining one at its first torn or corrupt record.
pub(super) fn recover(
    dir: &Path,
    acked_segment: u64,
    metrics: &SinkMetrics,
) -> Result<BTreeMap<u64, SegMeta>, SpoolError> {
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
        segments.insert(id, scan(dir, id, Some(id) == last, metrics)?);
    }
    Ok(segments)
}

fn scan(dir: &Path, id: u64, is_last: bool, metrics: &SinkMetrics) -> Result<SegMeta, SpoolError> {
    let path = segment_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| SpoolError::io(&path, e))?;
    let file_len = file.metadata().map_err(|e| SpoolError::io(&path, e))?.len();
    let mut r = BufReader::with_capacity(1 << 20, &file);
    let mut payload = Vec::new();
    let mut meta = SegMeta::default();
    loop {
        match read_next(&mut r, &mut payload).map_err(|e| SpoolError::io(&path, e))? {
            Next::Record { .. } => {
                meta.records += 1;
                meta.bytes += framed_len(payload.len());
            }
            Next::End => break,
            Next::Torn(why) => {
                let lost = file_len - meta.bytes;
                if is_last {
                    tracing::warn!(path = %path.display(), offset = meta.bytes, lost_bytes = lost, reason = why,
                        "truncating a torn record at the end of the spool (an interrupted write)");
                } else {
                    tracing::error!(path = %path.display(), offset = meta.bytes, lost_bytes = lost, reason = why,
                        "spool segment is corrupt; truncating it and losing the rest of the segment");
                }
                metrics.dropped(DropReason::Corrupt, 1);
                file.set_len(meta.bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| SpoolError::io(&path, e))?;
                break;
            }
        }
    }
    Ok(meta)
}
