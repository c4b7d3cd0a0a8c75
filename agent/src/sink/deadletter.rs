//! Quarantine for rows ClickHouse rejects as invalid.
//!
//! Each rejected piece is written as `<name>.rowbinary` next to
//! `<name>.error.txt` with the server's message and the column layout the
//! rows were encoded with: the `columns:` line is the list to name in
//! `INSERT INTO t (<columns>) FORMAT RowBinary` once the cause is fixed, the
//! `structure:` line their types. Writing it is data loss from the table's
//! point of view, so it is logged at ERROR.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::spool::{Layout, SpoolError};

/// The dead-letter directory.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    dir: PathBuf,
}

impl DeadLetter {
    /// Dead letters go to `dir` (created on first use).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one rejected piece and returns the data file's path.
    pub fn write(
        &self,
        name: &str,
        data: &[u8],
        rows: usize,
        error: &str,
        layout: &Layout,
    ) -> Result<PathBuf, SpoolError> {
        fs::create_dir_all(&self.dir).map_err(|e| SpoolError::Io(self.dir.clone(), e))?;
        let path = self.dir.join(format!("{name}.rowbinary"));
        write_synced(&path, data)?;
        let note = format!(
            "rows: {rows}\nerror: {error}\ncolumns: {}\nstructure: {}\n",
            layout.insert_columns(),
            layout.structure()
        );
        write_synced(&self.dir.join(format!("{name}.error.txt")), note.as_bytes())?;
        tracing::error!(path = %path.display(), rows, error, "ClickHouse rejected rows as invalid; moved them to the dead-letter directory");
        Ok(path)
    }
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), SpoolError> {
    let mut f = fs::File::create(path).map_err(|e| SpoolError::Io(path.to_path_buf(), e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| SpoolError::Io(path.to_path_buf(), e))
}
