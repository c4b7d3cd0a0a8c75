//! Where a CA lives and what a new one is created with.

use std::path::{Path, PathBuf};

use crate::CaError;
use crate::constraints::HostConstraints;

/// What a new root is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaOptions {
    /// Host patterns configured for interception (`api.openai.com`, `*.openai.azure.com`).
    pub intercept_hosts: Vec<String>,
    /// Limit the root to `intercept_hosts` with X.509 Name Constraints.
    pub name_constraints: bool,
}

impl Default for CaOptions {
    fn default() -> Self {
        Self {
            intercept_hosts: Vec::new(),
            name_constraints: true,
        }
    }
}

impl CaOptions {
    /// The constraints a root created with these options carries.
    pub fn constraints(&self) -> Result<HostConstraints, CaError> {
        if self.name_constraints {
            HostConstraints::from_patterns(&self.intercept_hosts)
        } else {
            Ok(HostConstraints::unconstrained())
        }
    }
}

/// File locations inside a CA directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPaths {
    /// The directory itself.
    pub dir: PathBuf,
    /// Root certificate, PEM (`ca.pem`).
    pub cert: PathBuf,
    /// Root private key, PKCS#8 PEM, mode 0600 (`ca.key`).
    pub key: PathBuf,
    /// The root replaced by the last rotation, kept so operators can find and uninstall it.
    pub prev_cert: PathBuf,
    /// The staged next root (`ca rotate --stage`): published in bundles, not yet signing.
    pub next_cert: PathBuf,
    /// Key of the staged next root, mode 0600.
    pub next_key: PathBuf,
}

impl CaPaths {
    /// Paths of the CA stored in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            cert: dir.join("ca.pem"),
            key: dir.join("ca.key"),
            prev_cert: dir.join("ca.prev.pem"),
            next_cert: dir.join("ca.next.pem"),
            next_key: dir.join("ca.next.key"),
        }
    }

    pub(crate) fn any_exists(&self) -> bool {
        self.cert.exists() || self.key.exists()
    }
}
