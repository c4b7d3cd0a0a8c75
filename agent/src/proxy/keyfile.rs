//! The secret that keys API key fingerprints. By default a per-host one: 32 random bytes in
//! `state_dir/fingerprint.key`, created once with mode 0600 and reused on restart, so the same
//! key always yields the same fingerprint on this host. With `llm.fingerprint_key_file` a
//! secret shared by a fleet (e.g. a mounted Kubernetes Secret) is used instead, so the same key
//! has the same fingerprint on every host. Its bytes are never logged.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use ring::rand::{SecureRandom as _, SystemRandom};

/// File name inside `state_dir`.
pub const FILE_NAME: &str = "fingerprint.key";
const KEY_LEN: usize = 32;
/// A shared secret is text or bytes of at least this many bytes (256 bits if random)…
const SHARED_MIN_LEN: usize = 32;
/// … and at most this many (a larger file is not a key).
const SHARED_MAX_LEN: usize = 4096;

/// Why the key cannot be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: expected {KEY_LEN} bytes, found {len} (remove it to create a new key)")]
    Length { path: PathBuf, len: usize },
    #[error("no randomness for a new fingerprint key")]
    Random,
    #[error(
        "{path}: {len} bytes; a shared fingerprint key needs {SHARED_MIN_LEN} to {SHARED_MAX_LEN} (e.g. `openssl rand -base64 32`)"
    )]
    SharedLength { path: PathBuf, len: usize },
    #[error(
        "{path}: mode {mode:04o} lets other users read or change the fingerprint key; make it 0600 or 0400 (Kubernetes: defaultMode: 0400)"
    )]
    Permissions { path: PathBuf, mode: u32 },
}

/// The fingerprint secret: the shared file when `shared` is set, else the per-host key in
/// `state_dir` (created on first use).
pub fn load(shared: Option<&Path>, state_dir: &Path) -> Result<Vec<u8>, KeyError> {
    match shared {
        Some(path) => load_shared(path),
        None => load_or_create(state_dir),
    }
}

/// Reads a fleet-wide secret. Trailing whitespace (the newline an editor or `kubectl create
/// secret --from-file` may leave) is not part of the key, so every host derives the same one.
/// The file must not be writable by the group or open to other users.
pub fn load_shared(path: &Path) -> Result<Vec<u8>, KeyError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o027 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > SHARED_MAX_LEN as u64 {
        return Err(KeyError::SharedLength {
            path: path.to_owned(),
            len: usize::try_from(meta.len()).unwrap_or(usize::MAX),
        });
    }
    let mut key = fs::read(path).map_err(io_err(path))?;
    let kept = key.trim_ascii_end().len();
    key.truncate(kept);
    if !(SHARED_MIN_LEN..=SHARED_MAX_LEN).contains(&key.len()) {
        return Err(KeyError::SharedLength {
            path: path.to_owned(),
            len: key.len(),
        });
    }
    Ok(key)
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

    fn shared(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_shared_key_is_the_same_everywhere_and_replaces_the_host_key() {
        let dir = tempfile::tempdir().unwrap();
        let secret = b"c2hhcmVkIGZsZWV0IHNlY3JldCBmb3IgdGVzdHMgb25seQ==";
        let a = shared(dir.path(), "a", &[secret.as_slice(), b"\n"].concat(), 0o400);
        let b = shared(dir.path(), "b", secret, 0o640);
        let (host_a, host_b) = (dir.path().join("host-a"), dir.path().join("host-b"));
        let key_a = load(Some(&a), &host_a).unwrap();
        let key_b = load(Some(&b), &host_b).unwrap();
        assert_eq!(key_a, secret.to_vec());
        assert_eq!(key_a, key_b);
        assert!(
            !host_a.exists(),
            "no per-host key is created when a shared one is set"
        );
        let fp = |key: &[u8]| {
            crate::llm::fingerprint::Fingerprinter::new(key).fingerprint("sk-test-123")
        };
        assert_eq!(fp(&key_a), fp(&key_b));
        // Per-host keys differ between hosts, so their fingerprints do too.
        let per_host_a = load(None, &host_a).unwrap();
        let per_host_b = load(None, &host_b).unwrap();
        assert_ne!(fp(&per_host_a), fp(&per_host_b));
    }

    #[test]
    fn a_weak_or_exposed_shared_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = shared(dir.path(), "short", b"too short\n", 0o600);
        let e = load_shared(&short).unwrap_err().to_string();
        assert!(e.contains("9 bytes") && e.contains("32 to 4096"), "{e}");
        let open = shared(dir.path(), "open", &[7u8; 40], 0o644);
        let e = load_shared(&open).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("0400"), "{e}");
        let group_writable = shared(dir.path(), "gw", &[7u8; 40], 0o660);
        assert!(load_shared(&group_writable).is_err());
        let big = shared(dir.path(), "big", &[7u8; 5000], 0o600);
        assert!(
            load_shared(&big)
                .unwrap_err()
                .to_string()
                .contains("5000 bytes")
        );
        let e = load_shared(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn a_damaged_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"short").unwrap();
        let e = load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("expected 32 bytes"), "{e}");
    }
}
