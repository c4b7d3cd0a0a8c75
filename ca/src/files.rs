//! Atomic, permission-aware file writes for the CA directory.
//!
//! Every file is written to a temporary name created with its final mode (so a key is never
//! world-readable, not even between create and chmod), synced, then renamed into place.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::CaError;

/// Mode of the private key file.
pub const KEY_MODE: u32 = 0o600;
/// Mode of the public certificate files.
pub const CERT_MODE: u32 = 0o644;

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn ensure_dir(dir: &Path) -> Result<(), CaError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CaError::io("create directory", dir, e))
}

/// A file written under a temporary name and not yet visible at its final path.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl Staged {
    /// Moves the file to its final path, replacing what was there.
    pub fn commit(mut self) -> Result<(), CaError> {
        fs::rename(&self.tmp, &self.target).map_err(|e| CaError::io("rename", &self.target, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // An uncommitted stage (error path) must not leave key material behind.
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to a fresh temporary file next to `target`, created with `mode`.
pub fn stage(target: &Path, bytes: &[u8], mode: u32) -> Result<Staged, CaError> {
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let tmp = target.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    // A stale temp file from a crashed run may have any mode; never reuse it.
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| CaError::io("create", &tmp, e))?;
    let staged = Staged {
        tmp,
        target: target.to_path_buf(),
        committed: false,
    };
    // The umask can only remove bits; set them explicitly so 0644 certs are readable.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .map_err(|e| CaError::io("write", &staged.tmp, e))?;
    Ok(staged)
}

/// Reads a UTF-8 file, mapping "not found" to `None`.
pub fn read_optional(path: &Path) -> Result<Option<String>, CaError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CaError::io("read", path, e)),
    }
}

/// Fails when the key file is readable or writable by group or others.
pub fn check_key_mode(path: &Path) -> Result<(), CaError> {
    let mode = fs::metadata(path)
        .map_err(|e| CaError::io("stat", path, e))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_file_has_mode_from_creation_and_is_cleaned_up_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("k");
        let staged = stage(&target, b"secret", KEY_MODE).unwrap();
        let tmp_mode = fs::metadata(&staged.tmp).unwrap().permissions().mode() & 0o777;
        assert_eq!(tmp_mode, KEY_MODE);
        drop(staged);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!target.exists());
    }

    #[test]
    fn commit_replaces_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("c");
        fs::write(&target, "old").unwrap();
        stage(&target, b"new", CERT_MODE).unwrap().commit().unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn loose_key_mode_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca.key");
        fs::write(&key, "x").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            check_key_mode(&key),
            Err(CaError::KeyPermissions { mode: 0o644, .. })
        ));
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        check_key_mode(&key).unwrap();
    }
}
