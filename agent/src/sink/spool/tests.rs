//! Model-style tests of the spool: what goes in comes out once, in order.

use std::io::Write;

use super::*;
use crate::sink::config::{FullPolicy, SpoolConfig};

fn cfg(max_bytes: u64, policy: FullPolicy) -> SpoolConfig {
    SpoolConfig {
        dir: None,
        max_bytes,
        fsync_interval_ms: 1,
        full_policy: policy,
        ..SpoolConfig::default()
    }
}

fn read_all(reader: &mut SpoolReader) -> Vec<Vec<u8>> {
    let mut batch = Batch::default();
    reader
        .fill(&mut batch, usize::MAX, usize::MAX, reader.committed())
        .unwrap();
    let mut out = Vec::new();
    let mut start = 0;
    for end in &batch.row_ends {
        out.push(batch.data[start..*end].to_vec());
        start = *end;
    }
    reader.ack(batch.end).unwrap();
    out
}

#[test]
fn appended_records_are_read_once_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let (mut w, mut r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m).unwrap();
    let rows: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| vec![(i % 251) as u8; 100 + (i % 50) as usize])
        .collect();
    for row in &rows {
        assert!(w.append(row, 1).unwrap());
    }
    // Rolling a segment commits it; the rows of the active one wait for the commit.
    let mut seen = read_all(&mut r);
    assert!(
        seen.len() < rows.len(),
        "uncommitted rows must not be visible"
    );
    w.commit().unwrap();
    seen.extend(read_all(&mut r));
    assert_eq!(seen, rows);
    assert!(read_all(&mut r).is_empty());
    let segs = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count();
    assert!(segs <= 2, "shipped segments are deleted, {segs} left");
}

#[test]
fn reopen_replays_unacked_and_truncates_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    {
        let (mut w, mut r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m).unwrap();
        w.append(b"one", 1).unwrap();
        w.commit().unwrap();
        assert_eq!(read_all(&mut r), vec![b"one".to_vec()]);
        w.append(b"two", 2).unwrap();
        w.append(b"three", 3).unwrap();
        w.commit().unwrap();
    }
    // A crash mid-append: half a record at the end of the newest segment.
    let newest = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    let good_len = std::fs::metadata(&newest).unwrap().len();
    let mut torn = Vec::new();
    frame(b"four-is-torn", 4, &mut torn);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap()
        .write_all(&torn[..torn.len() - 3])
        .unwrap();

    let (mut w, mut r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m).unwrap();
    assert_eq!(std::fs::metadata(&newest).unwrap().len(), good_len);
    assert_eq!(
        m.dropped_count(crate::sink::metrics::DropReason::Corrupt),
        1
    );
    w.append(b"five", 5).unwrap();
    w.commit().unwrap();
    assert_eq!(
        read_all(&mut r),
        vec![b"two".to_vec(), b"three".to_vec(), b"five".to_vec()]
    );
}

#[test]
fn inflight_batch_is_replayed_with_the_same_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let seq = {
        let (mut w, mut r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m).unwrap();
        for i in 0..10u8 {
            w.append(&[i; 10], 1).unwrap();
        }
        w.commit().unwrap();
        let mut b = Batch::default();
        r.fill(&mut b, 4, usize::MAX, r.committed()).unwrap();
        r.begin(&b).unwrap()
    };
    let (_w, mut r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m).unwrap();
    let inf = r.inflight().unwrap();
    let mut b = Batch::default();
    r.fill(&mut b, usize::MAX, usize::MAX, inf.end).unwrap();
    assert_eq!(b.rows(), 4);
    assert_eq!(r.begin(&b).unwrap(), seq);
    r.ack(b.end).unwrap();
    let mut rest = Batch::default();
    r.fill(&mut rest, usize::MAX, usize::MAX, r.committed())
        .unwrap();
    assert_eq!(rest.rows(), 6);
    assert_ne!(r.begin(&rest).unwrap(), seq);
}

#[test]
fn full_spool_drops_oldest_or_newest_and_counts() {
    for policy in [FullPolicy::DropOldest, FullPolicy::DropNewest] {
        let dir = tempfile::tempdir().unwrap();
        let m = SinkMetrics::default();
        let (mut w, mut r) = open(dir.path(), &cfg(1 << 20, policy), &m).unwrap();
        let row = vec![7u8; 1000];
        let mut accepted = 0u64;
        for _ in 0..3000 {
            if w.append(&row, 1).unwrap() {
                accepted += 1;
            }
        }
        w.commit().unwrap();
        let dropped = m.dropped_count(crate::sink::metrics::DropReason::SpoolFull);
        assert!(dropped > 0, "{policy:?}");
        let read = read_all(&mut r).len() as u64;
        assert_eq!(
            read + dropped,
            3000,
            "{policy:?}: every row is read or counted as dropped"
        );
        if policy == FullPolicy::DropNewest {
            assert_eq!(read, accepted);
        }
    }
}

#[test]
fn a_failed_write_leaves_no_torn_record_behind_and_counts_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let config = cfg(1 << 20, FullPolicy::DropOldest);
    {
        let (mut w, mut r) = open(dir.path(), &config, &m).unwrap();
        w.append(b"one", 1).unwrap();
        w.commit().unwrap();
        w.append(b"two, not yet committed", 2).unwrap();
        w.fail_next_write = true;
        assert!(w.append(b"three, torn by the disk", 3).is_err());
        // "two" was never made durable: it is given up with the failed write, and counted.
        assert_eq!(m.dropped_count(crate::sink::metrics::DropReason::Closed), 1);
        w.append(b"four", 4).unwrap();
        w.commit().unwrap();
        assert_eq!(read_all(&mut r), vec![b"one".to_vec(), b"four".to_vec()]);
        assert_eq!(
            m.dropped_count(crate::sink::metrics::DropReason::Corrupt),
            0
        );
        w.append(b"five", 5).unwrap();
        w.commit().unwrap();
    }
    // A restart finds nothing corrupt either, and replays what was not acknowledged.
    let (_w, mut r) = open(dir.path(), &config, &m).unwrap();
    assert_eq!(
        m.dropped_count(crate::sink::metrics::DropReason::Corrupt),
        0
    );
    assert_eq!(read_all(&mut r), vec![b"five".to_vec()]);
}
