//! The CA's private key, wrapped so it can never be printed.

use std::fmt;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};

/// The root's signing key. `Debug` shows only the algorithm, never key material, so the key
/// cannot leak through `{:?}` in a log line or a panic message.
pub struct CaKey(KeyPair);

impl CaKey {
    /// Generates a fresh ECDSA P-256 key.
    pub fn generate() -> Result<Self, rcgen::Error> {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map(Self)
    }

    /// Parses a PKCS#8 PEM key.
    pub fn from_pem(pem: &str) -> Result<Self, rcgen::Error> {
        KeyPair::from_pem(pem).map(Self)
    }

    /// PKCS#8 PEM of the key; zeroed when dropped.
    pub(crate) fn to_pem(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(self.0.serialize_pem())
    }
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaKey({:?}, <redacted>)", self.0.algorithm())
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        PublicKeyData::algorithm(&self.0)
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_key_material() {
        let key = CaKey::generate().unwrap();
        let pem = key.to_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let shown = format!("{key:?} {key:#?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        // The PKCS#8 prefix is shared by every P-256 key; the tail is secret material.
        assert!(
            !shown.contains(&body[body.len() - 24..]),
            "key material in Debug output"
        );
    }
}
