//! Verified TLS to the original destination.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsConnector, client::TlsStream};
use tracing::{debug, warn};

use super::{
    Alpn,
    alpn::{H2, HTTP11},
};

/// System trust bundles, first found wins (Debian/Ubuntu, RHEL/Fedora, Alpine/others).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Why the trust store could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("cannot read extra root certificates from {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{path} holds no usable certificate")]
    Empty { path: PathBuf },
}

/// Why TLS to a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("the provider's certificate failed verification for {sni}: {detail}")]
    Verify { sni: String, detail: String },
    #[error("TLS handshake with the provider failed for {sni}: {detail}")]
    Handshake { sni: String, detail: String },
    #[error("TLS handshake with the provider timed out for {sni}")]
    Timeout { sni: String },
    #[error("`{0}` is not a valid server name")]
    BadName(String),
}

/// Client configs for the provider leg, one per ALPN choice.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    h2: Arc<ClientConfig>,
    http11: Arc<ClientConfig>,
    none: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Trusts the system roots (when `system` is set; webpki's Mozilla roots when no system
    /// bundle exists) plus every certificate in the `extra` PEM files.
    pub fn new(system: bool, extra: &[PathBuf]) -> Result<Self, RootsError> {
        let mut roots = RootCertStore::empty();
        if system {
            add_system_roots(&mut roots);
        }
        for path in extra {
            add_pem_file(&mut roots, path)?;
        }
        if roots.is_empty() {
            warn!("no trusted root certificates: every provider certificate will be rejected");
        }
        let roots = Arc::new(roots);
        let build = |protocols: &[&[u8]]| {
            let mut c = ClientConfig::builder_with_provider(super::crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            Arc::new(c)
        };
        Ok(Self {
            // An app that negotiated h2 gets h2 upstream when the provider speaks it; hyper
            // translates when the provider only speaks HTTP/1.1.
            h2: build(&[H2, HTTP11]),
            http11: build(&[HTTP11]),
            none: build(&[]),
        })
    }

    /// TLS over `tcp` with server name `sni`, offering the app's protocol.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        tcp: S,
        sni: &str,
        app: Alpn,
        timeout: Duration,
    ) -> Result<TlsStream<S>, UpstreamTlsError> {
        let name = ServerName::try_from(sni.to_owned())
            .map_err(|_| UpstreamTlsError::BadName(sni.to_owned()))?;
        let config = match app {
            Alpn::H2 => self.h2.clone(),
            Alpn::Http11 => self.http11.clone(),
            Alpn::None => self.none.clone(),
        };
        let connect = TlsConnector::from(config).connect(name, tcp);
        match tokio::time::timeout(timeout, connect).await {
            Err(_) => Err(UpstreamTlsError::Timeout {
                sni: sni.to_owned(),
            }),
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(classify(sni, &e)),
        }
    }
}

fn classify(sni: &str, e: &io::Error) -> UpstreamTlsError {
    let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match tls {
        Some(
            err @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_)),
        ) => UpstreamTlsError::Verify {
            sni: sni.to_owned(),
            detail: err.to_string(),
        },
        _ => UpstreamTlsError::Handshake {
            sni: sni.to_owned(),
            detail: e.to_string(),
        },
    }
}

pub(crate) fn add_system_roots(roots: &mut RootCertStore) {
    for bundle in SYSTEM_BUNDLES {
        let Ok(iter) = CertificateDer::pem_file_iter(bundle) else {
            continue;
        };
        let (added, ignored) = roots.add_parsable_certificates(iter.filter_map(Result::ok));
        debug!(bundle, added, ignored, "loaded system root certificates");
        if added > 0 {
            return;
        }
    }
    warn!("no system trust bundle found; using the built-in Mozilla root list");
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
}

pub(crate) fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), RootsError> {
    let read_err = |detail: String| RootsError::Read {
        path: path.to_path_buf(),
        detail,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(e.to_string()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(RootsError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}
