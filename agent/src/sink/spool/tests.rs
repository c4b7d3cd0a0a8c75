//! Model-style tests of the spool: what goes in comes out once, in order.

use std::io::Write;

use super::*;
use crate::sink::config::{FullPolicy, SpoolConfig};
use crate::sink::metrics::DropReason;

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

/// A segment as the release before layout headers wrote it.
fn write_legacy_segment(dir: &Path, id: u64, rows: &[&[u8]]) {
    let mut bytes = Vec::new();
    for row in rows {
        frame(row, 1, &mut bytes);
    }
    std::fs::write(segment_path(dir, id), bytes).unwrap();
}

fn rows_of(batch: &Batch) -> Vec<Vec<u8>> {
    let mut start = 0;
    batch
        .row_ends
        .iter()
        .map(|end| {
            let row = batch.data[start..*end].to_vec();
            start = *end;
            row
        })
        .collect()
}

#[test]
fn segments_of_two_layouts_are_batched_apart_and_replayed_alike() {
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    write_legacy_segment(dir.path(), 1, &[b"old1", b"old2"]);
    write_legacy_segment(dir.path(), 2, &[b"old3"]);
    let seq = {
        let (mut w, mut r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m).unwrap();
        w.append(b"new1", 1).unwrap();
        w.append(b"new2", 1).unwrap();
        w.commit().unwrap();
        let mut old = Batch::default();
        r.fill(&mut old, usize::MAX, usize::MAX, r.committed())
            .unwrap();
        // Both legacy segments, not the new one.
        assert_eq!(rows_of(&old), [b"old1", b"old2", b"old3"]);
        assert!(Arc::ptr_eq(old.layout.as_ref().unwrap(), &LEGACY_LAYOUT));
        assert!(old.sealed, "the next row has another layout");
        // Reading on adds nothing to a sealed batch.
        r.fill(&mut old, usize::MAX, usize::MAX, r.committed())
            .unwrap();
        assert_eq!(old.rows(), 3);
        r.begin(&old).unwrap()
    };
    assert_eq!(
        m.dropped_count(crate::sink::metrics::DropReason::Corrupt),
        0
    );
    // After a crash the in-flight legacy batch is re-read identically.
    let (_w, mut r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m).unwrap();
    let inf = r.inflight().unwrap();
    r.seek(inf.start);
    let mut again = Batch::default();
    r.fill(&mut again, usize::MAX, usize::MAX, inf.end).unwrap();
    assert_eq!(rows_of(&again), [b"old1", b"old2", b"old3"]);
    assert_eq!(r.begin(&again).unwrap(), seq);
    r.ack(again.end).unwrap();
    let mut new = Batch::default();
    r.fill(&mut new, usize::MAX, usize::MAX, r.committed())
        .unwrap();
    assert_eq!(rows_of(&new), [b"new1", b"new2"]);
    assert!(Arc::ptr_eq(new.layout.as_ref().unwrap(), &CURRENT_LAYOUT));
    assert!(!new.sealed);
    assert!(!segment_path(dir.path(), 1).exists() && !segment_path(dir.path(), 2).exists());
}

#[test]
fn unreadable_headers_are_set_aside_counted_and_never_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    // Segment 1: a checksummed header that is not a layout.
    let mut garbled = layout::MAGIC.to_vec();
    frame(b"not a layout", 1, &mut garbled);
    frame(b"row of unknown layout", 1, &mut garbled);
    std::fs::write(segment_path(dir.path(), 1), &garbled).unwrap();
    // Segment 2: rows of the legacy layout.
    write_legacy_segment(dir.path(), 2, &[b"old"]);
    // Segment 3, the newest: its creation was cut short inside the header.
    let mut torn = Vec::new();
    CURRENT_LAYOUT.write_header(1, &mut torn);
    std::fs::write(segment_path(dir.path(), 3), &torn[..torn.len() / 2]).unwrap();

    let (mut w, mut r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m).unwrap();
    assert_eq!(
        m.dropped_count(crate::sink::metrics::DropReason::Corrupt),
        1
    );
    let aside = dir.path().join(format!("{:020}.seg.unreadable", 1));
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        garbled,
        "kept for an operator"
    );
    assert!(!segment_path(dir.path(), 1).exists());
    // The torn, empty segment was removed; the new writer starts after it.
    assert!(!segment_path(dir.path(), 3).exists());
    let mut seg3 = std::fs::File::open(segment_path(dir.path(), 4)).unwrap();
    let head = layout::read_head(&mut seg3).unwrap().unwrap();
    assert!(Arc::ptr_eq(&head.layout_and_start().0, &CURRENT_LAYOUT));
    w.append(b"new", 1).unwrap();
    w.commit().unwrap();
    let mut b = Batch::default();
    r.fill(&mut b, usize::MAX, usize::MAX, r.committed())
        .unwrap();
    assert_eq!(rows_of(&b), [b"old"]);
    r.ack(b.end).unwrap();
    assert_eq!(read_all(&mut r), [b"new"]);
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
        w.fail_next_write = Some(std::io::ErrorKind::Other);
        assert!(w.append(b"three, torn by the disk", 3).is_err());
        // "two" was never written out: it is given up with the failed write, and counted.
        assert_eq!(m.dropped_count(DropReason::IoError), 1);
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

/// A spool in `dir` holding "one" committed and "two, given up" only buffered, whose next
/// write-out takes part of the buffer and fails with `kind`.
fn one_committed_one_to_fail(
    dir: &std::path::Path,
    m: &SinkMetrics,
    kind: std::io::ErrorKind,
) -> (SpoolWriter, SpoolReader) {
    let (mut w, r) = open(dir, &cfg(1 << 20, FullPolicy::DropOldest), m).unwrap();
    w.append(b"one", 1).unwrap();
    w.commit().unwrap();
    w.append(b"two, given up", 2).unwrap();
    w.fail_next_write = Some(kind);
    (w, r)
}

#[test]
fn rows_given_up_by_a_cut_are_never_written_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    // The disk takes part of the buffer and fails: the rest stays buffered.
    let (mut w, mut r) = one_committed_one_to_fail(dir.path(), &m, std::io::ErrorKind::Other);
    assert!(w.write_out().is_err());
    assert_eq!(m.dropped_count(DropReason::IoError), 1);
    w.append(b"four", 4).unwrap();
    w.commit().unwrap();
    assert_eq!(
        read_all(&mut r),
        vec![b"one".to_vec(), b"four".to_vec()],
        "a row counted as lost is not written after the cut"
    );
    assert_eq!(m.dropped_count(DropReason::Corrupt), 0);
}

#[test]
fn a_writer_that_stays_torn_writes_nothing_given_up_when_it_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    {
        // The disk fails part way through the buffer and stays full: no fresh segment.
        let (mut w, _r) =
            one_committed_one_to_fail(dir.path(), &m, std::io::ErrorKind::StorageFull);
        w.fail_opens = u32::MAX;
        assert!(w.write_out().is_err());
        assert_eq!(m.dropped_count(DropReason::NoSpace), 1);
        // Shut down while still torn: the writer and its buffer are dropped.
    }
    let m2 = SinkMetrics::default();
    let (_w, mut r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m2).unwrap();
    assert_eq!(
        read_all(&mut r),
        vec![b"one".to_vec()],
        "the row counted as lost stays lost"
    );
    assert_eq!(m2.dropped_count(DropReason::Corrupt), 0, "no torn tail");
}

#[test]
fn written_out_rows_survive_a_killed_writer_without_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    {
        let (mut w, _r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m).unwrap();
        w.append(b"one", 1).unwrap();
        w.append(b"two", 2).unwrap();
        assert_eq!(m.rows_spooled.get(), 0, "still in the writer's buffer");
        w.write_out().unwrap();
        assert_eq!(m.rows_spooled.get(), 2);
        assert!(
            w.is_dirty(),
            "written, not fsynced: the commit stays grouped"
        );
        w.append(b"three", 3).unwrap();
        // A killed process: nothing runs after this point, not even the buffer's drop.
        std::mem::forget(w);
    }
    let m = SinkMetrics::default();
    let (_w, mut r) = open(dir.path(), &cfg(1 << 20, FullPolicy::DropOldest), &m).unwrap();
    assert_eq!(
        read_all(&mut r),
        vec![b"one".to_vec(), b"two".to_vec()],
        "what was written out survives; what was only buffered does not"
    );
    assert_eq!(m.dropped_count(DropReason::Corrupt), 0);
}

#[test]
fn a_full_disk_keeps_what_was_written_refuses_rows_counted_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let m = SinkMetrics::default();
    let config = cfg(1 << 20, FullPolicy::DropOldest);
    {
        let (mut w, mut r) = open(dir.path(), &config, &m).unwrap();
        w.append(b"one", 1).unwrap();
        w.commit().unwrap();
        // Written out (the data path was told "spooled"), not yet fsynced.
        w.append(b"two", 2).unwrap();
        w.write_out().unwrap();
        w.append(b"three", 3).unwrap();
        // The disk fills: the write-out fails half way, and no fresh segment can be made.
        w.fail_next_write = Some(std::io::ErrorKind::StorageFull);
        w.fail_opens = 3;
        let e = w.write_out().unwrap_err();
        assert_eq!(e.drop_reason(), DropReason::NoSpace);
        assert_eq!(
            m.dropped_count(DropReason::NoSpace),
            1,
            "three, and only it"
        );
        // "two" is kept, made durable by the cut, and readable at once.
        assert_eq!(read_all(&mut r), vec![b"one".to_vec(), b"two".to_vec()]);
        // Still full: rows are refused, each counted by its caller; nothing is torn.
        assert!(w.append(b"four", 4).is_err());
        assert!(w.commit().is_err());
        // Space is back: a fresh segment, and rows are stored again.
        assert!(w.append(b"five", 5).unwrap());
        w.commit().unwrap();
        assert_eq!(read_all(&mut r), vec![b"five".to_vec()]);
        w.append(b"six", 6).unwrap();
        w.write_out().unwrap();
        std::mem::forget(w);
    }
    let m2 = SinkMetrics::default();
    let (_w, mut r) = open(dir.path(), &config, &m2).unwrap();
    assert_eq!(
        m2.dropped_count(DropReason::Corrupt),
        0,
        "no torn record anywhere"
    );
    assert_eq!(read_all(&mut r), vec![b"six".to_vec()]);
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "seg") && std::fs::metadata(p).unwrap().len() == 0
        })
        .count();
    assert_eq!(leftovers, 0, "no half-made segment left behind");
}
