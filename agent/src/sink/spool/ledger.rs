//! The ledger: what ClickHouse acknowledged, and the batch in flight.
//!
//! Written before a batch is sent (`inflight`) and after it is acknowledged
//! (`acked`), each time atomically (write temp, fsync, rename, fsync dir).
//! After a crash the in-flight batch is re-read from exactly the same
//! positions and re-sent with the same sequence number, so it carries the same
//! deduplication token and the same bytes.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Position, SpoolError};

const FILE: &str = "ledger.json";

/// A batch that was (or is about to be) sent but not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    /// Sequence number; part of the deduplication token.
    pub seq: u64,
    /// First record of the batch.
    pub start: Position,
    /// Position after its last record.
    pub end: Position,
}

/// Persistent ledger state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerState {
    /// Random id of this spool; with `seq` it names each batch uniquely.
    pub spool_id: Uuid,
    /// Everything before this position is acknowledged by ClickHouse.
    pub acked: Position,
    /// The unacknowledged batch, if one was sent.
    pub inflight: Option<Inflight>,
    /// Sequence number of the next new batch.
    pub next_seq: u64,
}

/// The ledger file and its current state.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    /// Current state; call [`Ledger::save`] after changing it.
    pub state: LedgerState,
}

impl Ledger {
    /// Loads the ledger in `dir`, or starts a new one.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        let path = dir.join(FILE);
        let fresh = || LedgerState {
            spool_id: Uuid::new_v4(),
            acked: Position::default(),
            inflight: None,
            next_seq: 0,
        };
        let state = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(state) => state,
                Err(e) => {
                    // Starting over re-ships the spool: duplicates, which the table
                    // collapses, are better than an agent that cannot start.
                    let aside = dir.join("ledger.json.corrupt");
                    tracing::error!(path = %path.display(), error = %e, moved_to = %aside.display(),
                        "spool ledger is unreadable; re-shipping every spooled row");
                    fs::rename(&path, &aside).map_err(|e| SpoolError::io(&path, e))?;
                    fresh()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fresh(),
            Err(e) => return Err(SpoolError::io(&path, e)),
        };
        let ledger = Self {
            dir: dir.to_path_buf(),
            state,
        };
        ledger.save()?;
        Ok(ledger)
    }

    /// Persists the state atomically.
    pub fn save(&self) -> Result<(), SpoolError> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join("ledger.json.tmp");
        let bytes = serde_json::to_vec(&self.state).expect("ledger serialises");
        let mut f = File::create(&tmp).map_err(|e| SpoolError::io(&tmp, e))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_data())
            .map_err(|e| SpoolError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| SpoolError::io(&path, e))?;
        super::sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(dir.path()).unwrap();
        l.state.acked = Position {
            segment: 3,
            offset: 99,
        };
        l.state.inflight = Some(Inflight {
            seq: 4,
            start: l.state.acked,
            end: Position {
                segment: 4,
                offset: 1,
            },
        });
        l.save().unwrap();
        let again = Ledger::open(dir.path()).unwrap();
        assert_eq!(again.state, l.state);
    }

    #[test]
    fn a_corrupt_ledger_starts_over_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.state.acked, Position::default());
        assert!(dir.path().join("ledger.json.corrupt").exists());
    }
}
