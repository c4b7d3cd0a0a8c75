//! Building the root certificate and reading one back.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::CaError;
use crate::constraints::HostConstraints;
use crate::key::CaKey;

/// How long a root is valid. Long, because replacing a root means reinstalling it everywhere.
const ROOT_VALIDITY: Duration = Duration::from_hours(10 * 365 * 24);
/// Back-dating for clock skew between this host and clients.
const BACKDATE: Duration = Duration::from_hours(1);

/// A freshly generated root: key, issuer state and certificate.
pub(crate) struct NewRoot {
    pub key_pem: zeroize::Zeroizing<String>,
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    pub issuer: Issuer<'static, CaKey>,
}

/// Generates an ECDSA P-256 root, pathlen 0, limited to `constraints`.
pub(crate) fn generate(constraints: &HostConstraints, now: SystemTime) -> Result<NewRoot, CaError> {
    let key = CaKey::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = root_name(now);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + ROOT_VALIDITY).into();
    params.serial_number = Some(random_serial());
    params.name_constraints = constraints.to_extension();
    let cert = params.self_signed(&key)?;
    Ok(NewRoot {
        key_pem: key.to_pem(),
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    })
}

/// The subject carries the creation time so operators can tell rotated roots apart in a trust
/// store listing.
fn root_name(now: SystemTime) -> DistinguishedName {
    let stamp = OffsetDateTime::from(now)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "llmtrace");
    name.push(
        DnType::CommonName,
        format!("llmtrace local root CA {stamp}"),
    );
    name
}

/// 16 random bytes with the top bit clear: positive and unique per certificate (RFC 5280).
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // SystemRandom only fails when the OS has no entropy source; a zero serial still yields a
    // valid certificate, the key identifier keeps it distinct.
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

/// What the CA needs to know about a root certificate read from disk.
#[derive(Debug)]
pub(crate) struct RootInfo {
    pub constraints: HostConstraints,
    pub not_after: SystemTime,
    pub spki: Vec<u8>,
}

/// Parses the parts of a root certificate the CA checks on load.
pub(crate) fn inspect(der: &CertificateDer<'_>) -> Result<RootInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let not_after = u64::try_from(cert.validity().not_after.timestamp())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
        .map_err(|_| "validity ends before 1970".to_string())?;
    Ok(RootInfo {
        constraints: HostConstraints::from_cert(&cert),
        not_after,
        spki: cert.tbs_certificate.subject_pki.raw.to_vec(),
    })
}
