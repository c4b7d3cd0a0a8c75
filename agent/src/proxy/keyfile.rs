//! The per-host secret that keys API key fingerprints: 32 random bytes in
//! `state_dir/fingerprint.key`, created once with mode 0600 and reused on restart, so the same
//! key always yields the same fingerprint on this host. Its bytes are never logged.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use ring::rand::{SecureRandom as _, SystemRandom};

/// File name inside `state_dir`.
pub const FILE_NAME: &str = "fingerprint.key";
const KEY_LEN: usize = 32;

/// Why the key cannot be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: expected {KEY_LEN} bytes, found {len} (remove it to create a new key)")]
    Length { path: PathBuf, len: usize },
    #[error("no randomness for a new fingerprint key")]
    Random,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads `dir/fingerprint.key`, creating it first when it does not exist. Creation is atomic:
/// the key is written to a private temporary file and hard-linked into place, so a concurrent
/// start never sees a partial key and never replaces one that already exists.
pub fn load_or_create(dir: &Path) -> Result<Vec<u8>, KeyError> {
    let path = dir.join(FILE_NAME);
    match fs::read(&path) {
        Ok(key) => return check(&path, key),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path)(e)),
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut key = vec![0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| KeyError::Random)?;
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let written = write_private(&tmp, &key).and_then(|()| fs::hard_link(&tmp, &path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(key),
        // Another start won the race: use its key.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            check(&path, fs::read(&path).map_err(io_err(&path))?)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn write_private(path: &Path, key: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(key)?;
    f.sync_all()
}

fn check(path: &Path, key: Vec<u8>) -> Result<Vec<u8>, KeyError> {
    if key.len() == KEY_LEN {
        Ok(key)
    } else {
        Err(KeyError::Length {
            path: path.to_owned(),
            len: key.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = load_or_create(&state).unwrap();
        assert_eq!(first.len(), KEY_LEN);
        let meta = fs::metadata(state.join(FILE_NAME)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&state).unwrap(), first);
        let leftovers = fs::read_dir(&state).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn a_damaged_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"short").unwrap();
        let e = load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("expected 32 bytes"), "{e}");
    }
}
