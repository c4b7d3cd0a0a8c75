//! Which rows of a batch the server already holds.
//!
//! An insert that failed without the server calling the data invalid (connection reset,
//! timeout, server killed) may have been committed anyway: the server can die after writing
//! the part and before sending the response. Servers without insert deduplication tokens
//! (18.16) would store a re-sent batch twice, so before re-sending, the shipper asks which of
//! the batch's `trace_id`s are already there and re-sends only the others.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use super::spool::Layout;

/// `trace_id`s per existence query: keeps the statement small on old servers.
const IDS_PER_QUERY: usize = 500;

/// What identifies a spooled row in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowKey {
    /// The row's `trace_id`.
    pub trace_id: Uuid,
    /// Its `start_time` (µs), when the layout puts it where the current one does; it narrows
    /// the lookup to the partitions the batch can be in.
    pub start_time: Option<i64>,
}

/// The keys of the rows of `data` ending at `ends` (offsets into `data`), or `None` when the
/// layout does not start with `trace_id UUID` (then nothing can be looked up).
pub fn row_keys(layout: &Layout, data: &[u8], ends: &[usize]) -> Option<Vec<RowKey>> {
    let cols: Vec<&(String, String)> = layout.columns().iter().take(3).collect();
    let is = |i: usize, name: &str, ty: &str| {
        cols.get(i)
            .is_some_and(|(n, t)| n.as_str() == name && t.as_str() == ty)
    };
    if !is(0, "trace_id", "UUID") {
        return None;
    }
    let with_time = is(1, "connection_id", "UInt64") && is(2, "start_time", "DateTime64(6, 'UTC')");
    let mut start = 0;
    let mut keys = Vec::with_capacity(ends.len());
    for &end in ends {
        let row = data.get(start..end)?;
        keys.push(RowKey {
            trace_id: uuid_at(row)?,
            start_time: if with_time {
                row.get(24..32)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            } else {
                None
            },
        });
        start = end;
    }
    Some(keys)
}

/// A RowBinary UUID: two little-endian `u64` halves, high half first.
fn uuid_at(row: &[u8]) -> Option<Uuid> {
    let hi = u64::from_le_bytes(row.get(0..8)?.try_into().ok()?);
    let lo = u64::from_le_bytes(row.get(8..16)?.try_into().ok()?);
    Some(Uuid::from_u64_pair(hi, lo))
}

/// The existence queries for `keys` against `table` (`db.name`), in chunks.
pub fn queries(table: &str, keys: &[RowKey]) -> Vec<String> {
    keys.chunks(IDS_PER_QUERY)
        .map(|chunk| {
            let ids = chunk
                .iter()
                .map(|k| format!("toUUID('{}')", k.trace_id))
                .collect::<Vec<_>>()
                .join(", ");
            let times: Option<Vec<i64>> = chunk.iter().map(|k| k.start_time).collect();
            let range = match times
                .as_deref()
                .and_then(|t| Some((*t.iter().min()?, *t.iter().max()?)))
            {
                Some((lo, hi)) => format!("start_time >= {lo} AND start_time <= {hi} AND "),
                None => String::new(),
            };
            format!("SELECT toString(trace_id) FROM {table} WHERE {range}trace_id IN ({ids})")
        })
        .collect()
}

/// The `trace_id`s of `keys` that `table` already holds.
pub async fn present(
    client: &clickhouse::Client,
    table: &str,
    keys: &[RowKey],
    timeout: Duration,
) -> clickhouse::error::Result<HashSet<Uuid>> {
    let mut found = HashSet::new();
    for sql in queries(table, keys) {
        let fut = client.query_raw(&sql).fetch_all::<String>();
        let ids = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| clickhouse::error::Error::TimedOut)??;
        found.extend(ids.iter().filter_map(|s| Uuid::parse_str(s).ok()));
    }
    Ok(found)
}

/// The rows of `data` (ending at `ends`) whose key is not in `present`: their bytes, end
/// offsets, and how many were left out.
pub fn missing<S: std::hash::BuildHasher>(
    data: &Bytes,
    ends: &[usize],
    keys: &[RowKey],
    present: &HashSet<Uuid, S>,
) -> (Bytes, Vec<usize>, usize) {
    let mut out = Vec::with_capacity(data.len());
    let mut out_ends = Vec::with_capacity(ends.len());
    let mut skipped = 0;
    let mut start = 0;
    for (&end, key) in ends.iter().zip(keys) {
        if present.contains(&key.trace_id) {
            skipped += 1;
        } else {
            out.extend_from_slice(&data[start..end]);
            out_ends.push(out.len());
        }
        start = end;
    }
    (Bytes::from(out), out_ends, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::rowbinary::encode;
    use crate::sink::sample::sample_row;
    use crate::sink::spool::{CURRENT_LAYOUT, LEGACY_LAYOUT};

    fn batch(n: u64) -> (Bytes, Vec<usize>, Vec<crate::sink::TraceRow>) {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        let mut rows = Vec::new();
        for i in 0..n {
            let mut row = sample_row(i);
            row.start_time = 1_700_000_000_000_000 + i64::try_from(i).unwrap();
            encode(&row, &mut data);
            ends.push(data.len());
            rows.push(row);
        }
        (Bytes::from(data), ends, rows)
    }

    #[test]
    fn keys_are_read_from_the_rowbinary_bytes() {
        let (data, ends, rows) = batch(5);
        let keys = row_keys(&CURRENT_LAYOUT, &data, &ends).unwrap();
        for (k, r) in keys.iter().zip(&rows) {
            assert_eq!(k.trace_id, r.trace_id);
            assert_eq!(k.start_time, Some(r.start_time));
        }
        // The previous release's rows start with the same three columns.
        let legacy: Vec<&str> = LEGACY_LAYOUT.names().take(3).collect();
        assert_eq!(legacy, ["trace_id", "connection_id", "start_time"]);
        assert_eq!(row_keys(&LEGACY_LAYOUT, &data, &ends).unwrap(), keys);
        // A layout that does not start with the id cannot be looked up.
        let other = Layout::parse(b"llmtrace-spool-layout 1\nx UInt8\n").unwrap();
        assert!(row_keys(&other, &data, &ends).is_none());
        // Nor can rows shorter than an id.
        assert!(row_keys(&CURRENT_LAYOUT, &data[..10], &[10]).is_none());
    }

    #[test]
    fn present_rows_are_left_out_and_the_rest_kept_in_order() {
        let (data, ends, rows) = batch(6);
        let keys = row_keys(&CURRENT_LAYOUT, &data, &ends).unwrap();
        let present: HashSet<Uuid> = [rows[0].trace_id, rows[3].trace_id, rows[5].trace_id]
            .into_iter()
            .collect();
        let (left, left_ends, skipped) = missing(&data, &ends, &keys, &present);
        assert_eq!(skipped, 3);
        assert_eq!(left_ends.len(), 3);
        let back = crate::sink::rowbinary::decode_all(&left).unwrap();
        assert_eq!(
            back,
            vec![rows[1].clone(), rows[2].clone(), rows[4].clone()]
        );
        assert_eq!(*left_ends.last().unwrap(), left.len());

        let all: HashSet<Uuid> = rows.iter().map(|r| r.trace_id).collect();
        let (left, left_ends, skipped) = missing(&data, &ends, &keys, &all);
        assert!(left.is_empty() && left_ends.is_empty());
        assert_eq!(skipped, 6);
        let (left, _, skipped) = missing(&data, &ends, &keys, &HashSet::new());
        assert_eq!((left, skipped), (data, 0));
    }

    #[test]
    fn queries_are_chunked_and_bounded_by_start_time() {
        let (data, ends, rows) = batch(3);
        let keys = row_keys(&CURRENT_LAYOUT, &data, &ends).unwrap();
        let q = queries("db.t", &keys);
        assert_eq!(q.len(), 1);
        assert!(
            q[0].starts_with(
                "SELECT toString(trace_id) FROM db.t WHERE start_time >= 1700000000000000 \
                 AND start_time <= 1700000000000002 AND trace_id IN (toUUID('"
            ),
            "{}",
            q[0]
        );
        assert!(q[0].contains(&format!("toUUID('{}')", rows[2].trace_id)));
        let many = vec![keys[0]; IDS_PER_QUERY * 2 + 1];
        assert_eq!(queries("db.t", &many).len(), 3);
        let untimed = [RowKey {
            start_time: None,
            ..keys[0]
        }];
        assert!(!queries("db.t", &untimed)[0].contains("start_time"));
    }
}
