//! Minting short-lived leaf certificates for one server name.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::CaError;
use crate::key::CaKey;

/// How leaves are minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafPolicy {
    /// Lifetime from `now`; short, since leaves are re-minted on demand.
    pub validity: Duration,
    /// Start of validity before `now`, for clients whose clock runs behind.
    pub backdate: Duration,
    /// Also send the root in the chain. Off by default: clients must trust the root anyway, and
    /// every extra certificate costs bytes in each handshake.
    pub include_root: bool,
}

impl Default for LeafPolicy {
    fn default() -> Self {
        Self {
            validity: Duration::from_hours(7 * 24),
            backdate: Duration::from_hours(1),
            include_root: false,
        }
    }
}

/// A leaf certificate chain and its private key.
pub struct MintedLeaf {
    /// Leaf first, then the root when the policy includes it.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's PKCS#8 private key.
    pub key: PrivateKeyDer<'static>,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
}

impl fmt::Debug for MintedLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedLeaf")
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Signs a leaf for `name` without checking the root's constraints; callers check coverage.
pub(crate) fn sign(
    issuer: &Issuer<'_, CaKey>,
    root: &CertificateDer<'static>,
    name: &str,
    policy: &LeafPolicy,
    now: SystemTime,
) -> Result<MintedLeaf, CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::DnsName(name.try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(crate::root::random_serial());
    let not_after = now + policy.validity;
    params.not_before = (now - policy.backdate).into();
    params.not_after = not_after.into();
    let cert = params.signed_by(&key, issuer)?;
    let mut chain = vec![cert.der().clone()];
    if policy.include_root {
        chain.push(root.clone());
    }
    Ok(MintedLeaf {
        chain,
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        not_after,
    })
}
