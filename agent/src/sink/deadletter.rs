//! Quarantine for rows ClickHouse rejects as invalid.
//!
//! Each rejected piece is written as `<name>.rowbinary` next to
//! `<name>.error.txt` with the server's message and the column layout the
//! rows were encoded with: the `columns:` line is the list to name in
//! `INSERT INTO t (<columns>) FORMAT RowBinary` once the cause is fixed, the
//! `structure:` line their types. Writing it is data loss from the table's
//! point of view, so it is logged at ERROR. The directory is capped in bytes:
//! a server that rejects everything must not fill the disk, so beyond the cap
//! the oldest pieces are deleted (counted, logged at ERROR).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::metrics::{DropReason, SinkMetrics};
use super::spool::{Layout, SpoolError};

const DATA: &str = ".rowbinary";
const NOTE: &str = ".error.txt";

/// The dead-letter directory.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    dir: PathBuf,
    max_bytes: u64,
    metrics: SinkMetrics,
}

/// One stored piece: its data file, note file, bytes of both, and age.
struct Piece {
    name: String,
    bytes: u64,
    modified: SystemTime,
}

impl DeadLetter {
    /// Dead letters go to `dir` (created on first use), at most `max_bytes` of them.
    pub fn new(dir: &Path, max_bytes: u64, metrics: SinkMetrics) -> Self {
        Self {
            dir: dir.to_path_buf(),
            max_bytes,
            metrics,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one rejected piece and returns the data file's path (which the size cap may
    /// already have deleted when the piece alone is larger than the cap).
    pub fn write(
        &self,
        name: &str,
        data: &[u8],
        rows: usize,
        error: &str,
        layout: &Layout,
    ) -> Result<PathBuf, SpoolError> {
        fs::create_dir_all(&self.dir).map_err(|e| SpoolError::Io(self.dir.clone(), e))?;
        let path = self.dir.join(format!("{name}{DATA}"));
        write_synced(&path, data)?;
        let note = format!(
            "rows: {rows}\nerror: {error}\ncolumns: {}\nstructure: {}\n",
            layout.insert_columns(),
            layout.structure()
        );
        write_synced(&self.dir.join(format!("{name}{NOTE}")), note.as_bytes())?;
        tracing::error!(path = %path.display(), rows, error, "ClickHouse rejected rows as invalid; moved them to the dead-letter directory");
        self.enforce_cap();
        Ok(path)
    }

    /// Deletes the oldest pieces until the directory is under `max_bytes`.
    fn enforce_cap(&self) {
        let mut pieces = self.pieces();
        let mut total: u64 = pieces.iter().map(|p| p.bytes).sum();
        if total <= self.max_bytes {
            return;
        }
        pieces.sort_by(|a, b| (a.modified, &a.name).cmp(&(b.modified, &b.name)));
        let (mut deleted, mut lost_rows) = (0u64, 0u64);
        for piece in pieces {
            if total <= self.max_bytes {
                break;
            }
            let note = self.dir.join(format!("{}{NOTE}", piece.name));
            let rows = fs::read_to_string(&note)
                .ok()
                .and_then(|n| rows_of(&n))
                .unwrap_or(0);
            let data = self.dir.join(format!("{}{DATA}", piece.name));
            if let Err(e) = fs::remove_file(&data) {
                tracing::warn!(path = %data.display(), error = %e, "cannot delete a dead letter");
                continue;
            }
            let _ = fs::remove_file(&note);
            total = total.saturating_sub(piece.bytes);
            deleted += 1;
            lost_rows += rows;
        }
        if deleted > 0 {
            self.metrics.dropped(DropReason::DeadLetterFull, lost_rows);
            tracing::error!(dir = %self.dir.display(), max_bytes = self.max_bytes, deleted, lost_rows,
                "the dead-letter directory is over its size cap: deleted its oldest rows for good");
        }
    }

    /// The pieces on disk (a data file, with its note when present).
    fn pieces(&self) -> Vec<Piece> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let file_name = e.file_name();
                let name = file_name.to_str()?.strip_suffix(DATA)?.to_owned();
                let meta = e.metadata().ok()?;
                let note =
                    fs::metadata(self.dir.join(format!("{name}{NOTE}"))).map_or(0, |m| m.len());
                Some(Piece {
                    name,
                    bytes: meta.len() + note,
                    modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                })
            })
            .collect()
    }
}

/// The row count in a note file.
fn rows_of(note: &str) -> Option<u64> {
    note.lines()
        .find_map(|l| l.strip_prefix("rows: "))
        .and_then(|n| n.trim().parse().ok())
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), SpoolError> {
    let mut f = fs::File::create(path).map_err(|e| SpoolError::Io(path.to_path_buf(), e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| SpoolError::Io(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::spool::CURRENT_LAYOUT;

    #[test]
    fn the_directory_stays_under_its_cap_by_dropping_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let m = SinkMetrics::default();
        // A piece is its data plus its note (which lists the layout's columns): size the cap
        // from a real piece so that two and a half pieces fit.
        let probe = DeadLetter::new(&dir.path().join("probe"), u64::MAX, m.clone());
        probe
            .write("p", &[0; 1000], 2, "bad row", &CURRENT_LAYOUT)
            .unwrap();
        let piece: u64 = probe.pieces().iter().map(|p| p.bytes).sum();
        let cap = piece * 5 / 2;
        let dl = DeadLetter::new(dir.path(), cap, m.clone());
        for i in 0..5u8 {
            dl.write(
                &format!("piece{i}"),
                &[i; 1000],
                2,
                "bad row",
                &CURRENT_LAYOUT,
            )
            .unwrap();
            // Distinct modification times, oldest first.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let left: u64 = dl.pieces().iter().map(|p| p.bytes).sum();
        assert!(left <= cap, "{left} bytes left");
        let mut names: Vec<String> = dl.pieces().into_iter().map(|p| p.name).collect();
        names.sort();
        assert_eq!(names, ["piece3", "piece4"]);
        // Three pieces of two rows each were deleted, and counted.
        assert_eq!(m.dropped_count(DropReason::DeadLetterFull), 6);
        assert!(!dir.path().join("piece0.error.txt").exists());
    }

    #[test]
    fn under_the_cap_nothing_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let m = SinkMetrics::default();
        let dl = DeadLetter::new(dir.path(), 1 << 20, m.clone());
        for i in 0..3 {
            dl.write(&format!("p{i}"), b"rows", 1, "bad", &CURRENT_LAYOUT)
                .unwrap();
        }
        assert_eq!(dl.pieces().len(), 3);
        assert_eq!(m.dropped_count(DropReason::DeadLetterFull), 0);
    }
}
