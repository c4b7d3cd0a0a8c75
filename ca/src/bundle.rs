//! Trust bundles for clients that read one PEM file (`SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`,
//! `NODE_EXTRA_CA_CERTS`): the system roots followed by every llmtrace root a client must trust
//! right now — the active one, a staged next one (so it is trusted before it signs) and the
//! previous one (still signing on nodes that have not restarted yet after a rotation).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::authority::fingerprint;
use crate::options::CaPaths;
use crate::{CaError, files};

/// Where distributions keep the system bundle, in the order they are tried.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The role of an llmtrace root in a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootRole {
    /// Signs leaves now (`ca.pem`).
    Active,
    /// Staged by `ca rotate --stage`, signs after `--activate` (`ca.next.pem`).
    Next,
    /// Replaced by the last rotation (`ca.prev.pem`).
    Previous,
}

impl RootRole {
    fn label(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Next => "next (staged, not signing yet)",
            Self::Previous => "previous (replaced by the last rotation)",
        }
    }
}

/// An llmtrace root read from the CA directory (certificate only: no key access needed).
#[derive(Debug, Clone)]
pub struct PublishedRoot {
    /// Why clients trust it.
    pub role: RootRole,
    /// DER of the certificate.
    pub der: CertificateDer<'static>,
    /// The certificate as PEM.
    pub pem: String,
}

/// The llmtrace roots in `dir` that clients should trust; the active root must exist.
/// `with_previous` adds `ca.prev.pem` when present.
pub fn published_roots(dir: &Path, with_previous: bool) -> Result<Vec<PublishedRoot>, CaError> {
    let paths = CaPaths::new(dir);
    let mut wanted = vec![
        (RootRole::Active, &paths.cert),
        (RootRole::Next, &paths.next_cert),
    ];
    if with_previous {
        wanted.push((RootRole::Previous, &paths.prev_cert));
    }
    let mut out = Vec::new();
    for (role, path) in wanted {
        let Some(pem) = files::read_optional(path)? else {
            if role == RootRole::Active {
                return Err(CaError::NotFound(paths.dir));
            }
            continue;
        };
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CaError::Parse {
            what: "certificate",
            path: path.clone(),
            detail: e.to_string(),
        })?;
        out.push(PublishedRoot { role, der, pem });
    }
    Ok(out)
}

/// The first system bundle that exists: `override_path` if given (it must exist), else the
/// distribution locations in [`SYSTEM_BUNDLES`].
pub fn system_bundle_path(override_path: Option<&Path>) -> Result<PathBuf, CaError> {
    if let Some(p) = override_path {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(CaError::Bundle(format!(
                "the system bundle {} does not exist",
                p.display()
            )))
        };
    }
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CaError::Bundle(format!(
                "no system trust bundle found (looked at {}); pass --system FILE",
                SYSTEM_BUNDLES.join(", ")
            ))
        })
}

/// Builds the bundle: every certificate of `system_pem` (an llmtrace root already installed
/// there is dropped, so it is listed once, with its role) followed by `roots`. Fails when the
/// system bundle holds no certificate: a bundle of llmtrace roots alone would break every other
/// TLS connection of the client that uses it.
pub fn build(system_pem: &str, roots: &[PublishedRoot]) -> Result<String, CaError> {
    let mut out = String::new();
    let mut system = 0usize;
    for block in pem_blocks(system_pem)? {
        let der = CertificateDer::from_pem_slice(block.as_bytes())
            .map_err(|e| CaError::Bundle(format!("system bundle: {e}")))?;
        if roots.iter().any(|r| r.der == der) {
            continue;
        }
        out.push_str(block);
        out.push('\n');
        system += 1;
    }
    if system == 0 {
        return Err(CaError::Bundle(
            "the system bundle holds no certificate".to_string(),
        ));
    }
    for root in roots {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# llmtrace root CA, {}, SHA-256 {}",
            root.role.label(),
            fingerprint(&root.der)
        );
        out.push_str(root.pem.trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// The `BEGIN CERTIFICATE … END CERTIFICATE` blocks of a PEM text, in order.
fn pem_blocks(text: &str) -> Result<Vec<&str>, CaError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            return Err(CaError::Bundle(
                "the system bundle ends inside a certificate (truncated file?)".to_string(),
            ));
        };
        let end = start + len + END.len();
        blocks.push(&rest[start..end]);
        rest = &rest[end..];
    }
    Ok(blocks)
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
