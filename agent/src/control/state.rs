//! The state file: budget spend per limit and group, so an agent restart does not reset a
//! day's budget, and the groups blocked after an anomaly, so a restart does not lift them. Written atomically (temporary file, fsync, rename) periodically and at
//! shutdown; a missing file is an empty state, an unreadable one is logged and ignored
//! (never a reason not to start).

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{budget::Spend, config::Window, quarantine::SavedBlocks};

const VERSION: u32 = 1;

/// Everything persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub version: u32,
    pub limits: BTreeMap<String, RuleSnapshot>,
    /// Absent when nothing is blocked, so such a file reads as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomaly_blocks: Vec<SavedBlocks>,
}

/// One limit's spend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSnapshot {
    /// The window kind the spend was counted in (a changed kind starts over).
    pub window: Window,
    pub groups: BTreeMap<String, Spend>,
}

/// Reads the state; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Snapshot>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let s: Snapshot =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if s.version != VERSION {
        return Err(format!("{}: unknown version {}", path.display(), s.version));
    }
    Ok(Some(s))
}

/// Writes the state atomically: a reader (or a crash) sees the old file or the new one.
pub fn save(path: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let mut s = snapshot.clone();
    s.version = VERSION;
    let bytes = serde_json::to_vec(&s).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control-state.json");
        assert_eq!(load(&path).unwrap(), None);
        let mut s = Snapshot::default();
        s.limits.insert(
            "team".into(),
            RuleSnapshot {
                window: Window::Day,
                groups: [(
                    "k8s_workload=chat".to_owned(),
                    Spend {
                        window_start: 86_400,
                        spent_usd: 1.25,
                        crossed: 1,
                    },
                )]
                .into(),
            },
        );
        save(&path, &s).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back.limits, s.limits);
        assert!(!tmp_path(&path).exists());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path).unwrap_err().contains("control-state.json"));
        std::fs::write(&path, br#"{"version":9,"limits":{}}"#).unwrap();
        assert!(load(&path).unwrap_err().contains("version"));
    }
}
