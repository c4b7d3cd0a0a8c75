//! The local root CA on disk: create, load, rotate, and mint leaves from it.

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use rcgen::{Issuer, PublicKeyData};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::constraints::HostConstraints;
use crate::files::{self, CERT_MODE, KEY_MODE};
use crate::key::CaKey;
use crate::leaf::{self, LeafPolicy, MintedLeaf};
pub(crate) use crate::options::{CaOptions, CaPaths};
use crate::{CaError, root};

/// A loaded root CA able to mint leaves.
pub struct CertificateAuthority {
    paths: CaPaths,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, CaKey>,
    constraints: HostConstraints,
    not_after: SystemTime,
}

impl CertificateAuthority {
    /// Creates a root in `dir`. An existing CA is only replaced when `force` is set.
    pub fn init(dir: &Path, opts: &CaOptions, force: bool) -> Result<Self, CaError> {
        let paths = CaPaths::new(dir);
        if paths.any_exists() && !force {
            return Err(CaError::AlreadyExists(paths.dir));
        }
        Self::create(paths, opts)
    }

    /// Replaces the root with a new key and certificate; the old certificate is kept as
    /// `ca.prev.pem`. Creates a root when there is none.
    pub fn rotate(dir: &Path, opts: &CaOptions) -> Result<Self, CaError> {
        Self::create(CaPaths::new(dir), opts)
    }

    /// Loads the CA in `dir`, creating it when the directory holds none.
    pub fn load_or_init(dir: &Path, opts: &CaOptions) -> Result<Self, CaError> {
        if CaPaths::new(dir).any_exists() {
            Self::load(dir)
        } else {
            Self::init(dir, opts, false)
        }
    }

    /// Loads the CA in `dir`, checking the key's permissions and that it matches the root.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let paths = CaPaths::new(dir);
        let (cert, key) = (paths.cert.clone(), paths.key.clone());
        Self::load_pair(paths, &cert, &key, ("ca.pem", "ca.key"))
    }

    /// Loads the certificate and key at `cert_path` and `key_path` as the CA of `paths`.
    fn load_pair(
        paths: CaPaths,
        cert_path: &Path,
        key_path: &Path,
        names: (&'static str, &'static str),
    ) -> Result<Self, CaError> {
        let cert_pem = files::read_optional(cert_path)?;
        let key_pem = files::read_optional(key_path)?.map(zeroize::Zeroizing::new);
        let (cert_pem, key_pem) = match (cert_pem, key_pem) {
            (Some(c), Some(k)) => (c, k),
            (None, None) => return Err(CaError::NotFound(paths.dir)),
            (None, Some(_)) => return Err(CaError::Incomplete(paths.dir, names.0)),
            (Some(_), None) => return Err(CaError::Incomplete(paths.dir, names.1)),
        };
        files::check_key_mode(key_path)?;
        let parse_err = |what, path: &Path, detail: String| CaError::Parse {
            what,
            path: path.to_path_buf(),
            detail,
        };
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| parse_err("certificate", cert_path, e.to_string()))?;
        let info = root::inspect(&cert_der).map_err(|e| parse_err("certificate", cert_path, e))?;
        let key = CaKey::from_pem(&key_pem)
            .map_err(|e| parse_err("private key", key_path, e.to_string()))?;
        if key.subject_public_key_info() != info.spki {
            return Err(CaError::KeyMismatch(paths.dir));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| parse_err("certificate", cert_path, e.to_string()))?;
        Ok(Self {
            paths,
            cert_der,
            cert_pem,
            issuer,
            constraints: info.constraints,
            not_after: info.not_after,
        })
    }

    /// First half of a rotation that never breaks a client: writes the next root as
    /// `ca.next.pem` / `ca.next.key` (0600) next to the active one, which keeps signing. Bundles
    /// built from now on carry both roots; once every client trusts them, `activate_next`
    /// switches. Returns the staged root's fingerprint.
    pub fn stage_next(dir: &Path, opts: &CaOptions) -> Result<String, CaError> {
        let paths = CaPaths::new(dir);
        if !paths.any_exists() {
            return Err(CaError::NotFound(paths.dir));
        }
        if paths.next_cert.exists() || paths.next_key.exists() {
            return Err(CaError::AlreadyStaged(paths.dir));
        }
        let new = root::generate(&opts.constraints()?, SystemTime::now())?;
        let key = files::stage(&paths.next_key, new.key_pem.as_bytes(), KEY_MODE)?;
        let cert = files::stage(&paths.next_cert, new.cert_pem.as_bytes(), CERT_MODE)?;
        key.commit()?;
        cert.commit()?;
        tracing::info!(dir = %paths.dir.display(), "Staged the next llmtrace root CA.");
        Ok(fingerprint(&new.cert_der))
    }

    /// Second half of a staged rotation: the staged root becomes the active one (checked first:
    /// key mode, key matching certificate) and the replaced root is kept as `ca.prev.pem`.
    pub fn activate_next(dir: &Path) -> Result<Self, CaError> {
        let paths = CaPaths::new(dir);
        let (cert, key) = (paths.next_cert.clone(), paths.next_key.clone());
        let next = match Self::load_pair(paths.clone(), &cert, &key, ("ca.next.pem", "ca.next.key"))
        {
            Err(CaError::NotFound(dir)) => return Err(CaError::NothingStaged(dir)),
            other => other?,
        };
        if let Some(old) = files::read_optional(&paths.cert)? {
            files::stage(&paths.prev_cert, old.as_bytes(), CERT_MODE)?.commit()?;
        }
        // The key first: a crash in between leaves a mismatch that `load` reports, never a
        // root whose key is lost.
        std::fs::rename(&paths.next_key, &paths.key)
            .map_err(|e| CaError::io("rename", &paths.key, e))?;
        std::fs::rename(&paths.next_cert, &paths.cert)
            .map_err(|e| CaError::io("rename", &paths.cert, e))?;
        tracing::info!(dir = %paths.dir.display(), "Activated the staged llmtrace root CA.");
        Ok(next)
    }

    fn create(paths: CaPaths, opts: &CaOptions) -> Result<Self, CaError> {
        let constraints = opts.constraints()?;
        let new = root::generate(&constraints, SystemTime::now())?;
        files::ensure_dir(&paths.dir)?;
        // Stage everything first so a failure leaves the old CA intact.
        let key = files::stage(&paths.key, new.key_pem.as_bytes(), KEY_MODE)?;
        let cert = files::stage(&paths.cert, new.cert_pem.as_bytes(), CERT_MODE)?;
        if let Some(old) = files::read_optional(&paths.cert)? {
            files::stage(&paths.prev_cert, old.as_bytes(), CERT_MODE)?.commit()?;
        }
        key.commit()?;
        cert.commit()?;
        let info = root::inspect(&new.cert_der).map_err(|detail| CaError::Parse {
            what: "generated certificate",
            path: paths.cert.clone(),
            detail,
        })?;
        tracing::info!(dir = %paths.dir.display(), "Created a new llmtrace root CA.");
        Ok(Self {
            paths,
            cert_der: new.cert_der,
            cert_pem: new.cert_pem,
            issuer: new.issuer,
            constraints,
            not_after: info.not_after,
        })
    }

    /// The root certificate, DER.
    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Where the CA's files live.
    pub fn paths(&self) -> &CaPaths {
        &self.paths
    }

    /// The root's name constraints as read from the certificate.
    pub fn constraints(&self) -> &HostConstraints {
        &self.constraints
    }

    /// Whether the root may vouch for `host`.
    pub fn covers(&self, host: &str) -> bool {
        self.constraints.covers(host)
    }

    /// The configured host patterns the root cannot vouch for; report these at startup with the
    /// fix (`llmtrace ca rotate`).
    pub fn uncovered<'a, S: AsRef<str>>(&self, patterns: &'a [S]) -> Vec<&'a str> {
        patterns
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| !self.constraints.covers_pattern(p))
            .collect()
    }

    /// A sentence for the startup log when configured patterns fall outside the root's
    /// constraints, naming them and the fix; `None` when everything is covered.
    pub fn coverage_problem<S: AsRef<str>>(&self, patterns: &[S]) -> Option<String> {
        let missing = self.uncovered(patterns);
        if missing.is_empty() {
            return None;
        }
        Some(format!(
            "The llmtrace root CA in {} is not allowed to issue certificates for {} (its name \
             constraints predate this configuration), so that traffic will not be intercepted. \
             Run `llmtrace ca rotate` and reinstall the new root to cover them.",
            self.paths.dir.display(),
            missing.join(", ")
        ))
    }

    /// End of the root's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// SHA-256 fingerprint of the root, colon-separated hex (as browsers and openssl show it).
    pub fn fingerprint_sha256(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// Mints a leaf for `sni` with the default policy, valid from now.
    pub fn mint_leaf(&self, sni: &str) -> Result<MintedLeaf, CaError> {
        self.mint_leaf_with(sni, &LeafPolicy::default(), SystemTime::now())
    }

    /// Mints a leaf for `sni`; refuses names the root's constraints do not permit, so the agent
    /// never presents a certificate that clients would reject anyway.
    pub fn mint_leaf_with(
        &self,
        sni: &str,
        policy: &LeafPolicy,
        now: SystemTime,
    ) -> Result<MintedLeaf, CaError> {
        if !self.covers(sni) {
            return Err(CaError::NotCovered(sni.to_string()));
        }
        leaf::sign(&self.issuer, &self.cert_der, sni, policy, now)
    }

    #[cfg(test)]
    pub(crate) fn mint_unchecked(&self, sni: &str) -> MintedLeaf {
        leaf::sign(
            &self.issuer,
            &self.cert_der,
            sni,
            &LeafPolicy::default(),
            SystemTime::now(),
        )
        .unwrap()
    }
}

/// SHA-256 fingerprint of a certificate, colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("dir", &self.paths.dir)
            .field("fingerprint", &self.fingerprint_sha256())
            .field("constraints", &self.constraints)
            .field("key", &self.issuer.key())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
