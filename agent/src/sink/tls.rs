//! TLS to ClickHouse (`https://` URLs): the system roots plus `[sink.clickhouse] ca_file`, and an
//! optional client certificate for mutual TLS. Built on the workspace's rustls with the ring
//! provider (the same one the proxy uses), wrapped in a hyper connector the `clickhouse` crate
//! accepts, since the crate's own TLS features bring their own roots and no client certificates.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

use crate::tls::upstream::{RootsError, add_pem_file, add_system_roots};

/// The HTTPS connector handed to the `clickhouse` crate.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Same keep-alive and idle-pool values as the crate's default client.
const TCP_KEEPALIVE: Duration = Duration::from_mins(1);
/// ClickHouse closes idle keep-alive connections after 3 s; give them up before that.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A TLS file of `[sink.clickhouse]` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `ca_file` is unreadable or holds no certificate.
    #[error("{0}")]
    Roots(#[from] RootsError),
    /// `client_cert_file` is unreadable or holds no certificate.
    #[error("{path}: {detail}")]
    Cert { path: PathBuf, detail: String },
    /// `client_key_file` is unreadable or holds no private key.
    #[error("{path}: {detail}")]
    Key { path: PathBuf, detail: String },
    /// The certificate and key do not go together, or the certificate is not usable (webpki
    /// takes X.509 v3 only).
    #[error("client certificate and key are not a usable pair: {0}")]
    Pair(String),
}

impl TlsError {
    /// The `[sink.clickhouse]` key whose file is at fault.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Roots(_) => "sink.clickhouse.ca_file",
            Self::Key { .. } => "sink.clickhouse.client_key_file",
            Self::Cert { .. } | Self::Pair(_) => "sink.clickhouse.client_cert_file",
        }
    }
}

/// The TLS files of `[sink.clickhouse]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    /// `ca_file`: trusted besides the system roots.
    pub ca: Option<&'a Path>,
    /// `client_cert_file` and `client_key_file` (validation refuses one without the other).
    pub client: Option<(&'a Path, &'a Path)>,
}

/// The rustls client configuration for `files`: system roots, the CA file, and the client
/// certificate when one is configured. Also used by config validation, so a bad file is
/// refused at startup rather than at every insert.
pub fn client_config(files: TlsFiles<'_>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    add_system_roots(&mut roots);
    if let Some(ca) = files.ca {
        add_pem_file(&mut roots, ca)?;
    }
    let builder = ClientConfig::builder_with_provider(crate::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots);
    // No ALPN here: the connector offers http/1.1 (ClickHouse's HTTP interface has no h2).
    let config = match files.client {
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| TlsError::Pair(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// An HTTPS-only connector for `files` (an `https://` URL never falls back to plain HTTP).
pub fn connector(files: TlsFiles<'_>) -> Result<Connector, TlsError> {
    let tls = client_config(files)?;
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(tls))
        .https_only()
        .enable_http1()
        .wrap_connector(http))
}

/// A `clickhouse` client whose connections use [`connector`].
pub fn https_client(files: TlsFiles<'_>) -> Result<clickhouse::Client, TlsError> {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector(files)?);
    Ok(clickhouse::Client::with_http_client(http))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |detail: String| TlsError::Cert {
        path: path.to_owned(),
        detail,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The key's bytes never reach a message: only the path and the parser's verdict.
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::config::ClickHouseConfig;

    fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k, junk) = (dir.join("c.pem"), dir.join("k.pem"), dir.join("junk"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::write(&junk, "not pem\n").unwrap();
        (c, k, junk)
    }

    #[test]
    fn builds_with_a_ca_and_a_client_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = pki(dir.path());
        let cfg = ClickHouseConfig {
            url: Some("https://127.0.0.1:8443".into()),
            ca_file: Some(cert.clone()),
            client_cert_file: Some(cert),
            client_key_file: Some(key),
            ..ClickHouseConfig::default()
        };
        let config = client_config(cfg.tls_files()).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        connector(cfg.tls_files()).unwrap();
    }

    #[test]
    fn bad_files_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, junk) = pki(dir.path());
        let with = |ca: Option<&Path>, c: Option<&Path>, k: Option<&Path>| ClickHouseConfig {
            url: Some("https://127.0.0.1:8443".into()),
            ca_file: ca.map(Path::to_owned),
            client_cert_file: c.map(Path::to_owned),
            client_key_file: k.map(Path::to_owned),
            ..ClickHouseConfig::default()
        };
        let missing = dir.path().join("missing.pem");
        for (cfg, key_name) in [
            (with(Some(&junk), None, None), "ca_file"),
            (with(Some(&missing), None, None), "ca_file"),
            (with(None, Some(&junk), Some(&key)), "client_cert_file"),
            (with(None, Some(&cert), Some(&junk)), "client_key_file"),
            (with(None, Some(&key), Some(&key)), "client_cert_file"),
        ] {
            let e = client_config(cfg.tls_files()).unwrap_err();
            assert!(e.key().ends_with(key_name), "{key_name}: {e}");
        }
    }
}
