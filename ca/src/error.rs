//! Errors of the CA crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong creating, loading or using the local root CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA already exists and the caller did not ask to replace it.
    #[error(
        "a CA already exists in {0}; refusing to overwrite it (use `llmtrace ca init --force` or `llmtrace ca rotate`)"
    )]
    AlreadyExists(PathBuf),
    /// No CA has been created in the directory yet.
    #[error("no CA found in {0} (create one with `llmtrace ca init`)")]
    NotFound(PathBuf),
    /// Only one of the certificate and the key exists.
    #[error(
        "the CA in {0} is incomplete: {1} is missing (recreate it with `llmtrace ca init --force`)"
    )]
    Incomplete(PathBuf, &'static str),
    /// The key file can be read by other users.
    #[error(
        "{path} has mode {mode:o}; the CA key must not be readable by others (run `chmod 600 {path}`)"
    )]
    KeyPermissions {
        /// Path of the key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key on disk does not belong to the certificate on disk.
    #[error(
        "the key in {0} does not match its certificate (recreate the CA with `llmtrace ca init --force`)"
    )]
    KeyMismatch(PathBuf),
    /// `ca rotate --stage` found a staged root that was never activated.
    #[error(
        "a next root is already staged in {0} (ca.next.pem); activate it with `llmtrace ca rotate --activate` or delete ca.next.pem and ca.next.key"
    )]
    AlreadyStaged(PathBuf),
    /// `ca rotate --activate` found no staged root.
    #[error("no next root is staged in {0} (stage one with `llmtrace ca rotate --stage`)")]
    NothingStaged(PathBuf),
    /// A trust bundle could not be built from the given inputs.
    #[error("cannot build a trust bundle: {0}")]
    Bundle(String),
    /// A file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A PEM or DER object could not be parsed.
    #[error("cannot parse {what} in {path}: {detail}")]
    Parse {
        /// What was expected (certificate, key).
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// Why parsing failed.
        detail: String,
    },
    /// An intercepted host pattern cannot be turned into a name constraint.
    #[error("invalid intercepted host pattern {pattern:?}: {reason}")]
    InvalidHostPattern {
        /// The offending pattern as configured.
        pattern: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// Name constraints are on and no host to intercept was given.
    #[error(
        "name constraints are enabled but no intercepted hosts are configured; the CA would be unusable"
    )]
    NoHosts,
    /// A leaf was requested for a name the root's constraints do not permit.
    #[error(
        "{0} is not covered by the CA's name constraints (add it to the intercepted hosts and run `llmtrace ca rotate`)"
    )]
    NotCovered(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the generated key.
    #[error("rustls rejected a generated key: {0}")]
    Rustls(#[from] rustls::Error),
    /// A trust store operation failed.
    #[error("trust store: {0}")]
    TrustStore(String),
}

impl CaError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
