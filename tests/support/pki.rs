//! A throwaway test CA and one leaf certificate written as PEM files, for peers that read
//! certificates from disk (nginx, mitmproxy, curl, the test kit's own TLS servers). Never the
//! llmtrace CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// PEM files of a test CA and a leaf it signed.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate (what clients and proxies trust).
    pub ca_pem: PathBuf,
    /// The leaf certificate followed by the CA (the chain a server presents).
    pub chain_pem: PathBuf,
    /// The leaf's private key (PKCS#8).
    pub key_pem: PathBuf,
}

impl TestPki {
    /// Creates a CA and a leaf for `names` (DNS names or IP addresses) in `dir`.
    pub fn write(dir: &Path, names: &[&str]) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "llmtrace benchmark upstream test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let leaf = CertificateParams::new(names)
            .expect("leaf params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        let pki = Self {
            ca_pem: dir.join("ca.pem"),
            chain_pem: dir.join("chain.pem"),
            key_pem: dir.join("key.pem"),
        };
        std::fs::write(&pki.ca_pem, issuer.pem()).expect("write ca");
        std::fs::write(&pki.chain_pem, leaf.pem() + &issuer.pem()).expect("write chain");
        std::fs::write(&pki.key_pem, key.serialize_pem()).expect("write key");
        pki
    }
}

/// A rustls server (ring, safe default protocol versions, no client authentication) presenting
/// the chain and key in PEM files, such as a [`TestPki`]'s `chain_pem` and `key_pem`.
pub fn server_config(chain_pem: &Path, key_pem: &Path) -> rustls::ServerConfig {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain_pem)
        .expect("certificate chain")
        .collect::<Result<_, _>>()
        .expect("certificate chain");
    let key = PrivateKeyDer::from_pem_file(key_pem).expect("private key");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate")
}
