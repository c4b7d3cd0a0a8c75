//! rustls certificate resolver over the leaf cache: plug into a `ServerConfig` with
//! `with_cert_resolver(Arc::new(SniResolver::new(cache)))`.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::LeafCache;

/// Picks the leaf for the ClientHello's server name. Without SNI, or for a name the root does
/// not cover, it returns `None` and rustls aborts the handshake: the caller decides earlier
/// (from the ClientHello) which connections to intercept at all.
#[derive(Debug, Clone)]
pub struct SniResolver {
    cache: Arc<LeafCache>,
}

impl SniResolver {
    /// A resolver minting from `cache`.
    pub fn new(cache: Arc<LeafCache>) -> Self {
        Self { cache }
    }

    /// The cache behind this resolver.
    pub fn cache(&self) -> &Arc<LeafCache> {
        &self.cache
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        match self.cache.get(sni) {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::warn!(sni, %error, "No leaf certificate for this server name; aborting the handshake.");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::{CaOptions, CertificateAuthority, LeafCacheConfig};

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_config(cache: Arc<LeafCache>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver::new(cache)));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn client_config(root: &CertificateAuthority) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(root.root_der().clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// Runs one TLS connection over loopback: the server echoes one message; returns what the
    /// client read back, or the client's handshake error.
    async fn round_trip(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        name: &'static str,
    ) -> Result<Vec<u8>, std::io::Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = TlsAcceptor::from(server).accept(tcp).await else {
                return;
            };
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.unwrap();
            tls.write_all(&buf).await.unwrap();
            tls.shutdown().await.unwrap();
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let server_name = ServerName::try_from(name).unwrap();
        let result = async {
            let mut tls = TlsConnector::from(client).connect(server_name, tcp).await?;
            tls.write_all(b"hello").await?;
            let mut echoed = Vec::new();
            tls.read_to_end(&mut echoed).await?;
            Ok(echoed)
        }
        .await;
        server_task.await.unwrap();
        result
    }

    #[tokio::test]
    async fn real_handshake_with_a_client_trusting_only_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CaOptions {
            intercept_hosts: vec!["api.openai.com".into(), "*.openai.azure.com".into()],
            name_constraints: true,
        };
        let ca = Arc::new(CertificateAuthority::init(dir.path(), &opts, false).unwrap());
        let cache = Arc::new(LeafCache::new(ca.clone(), LeafCacheConfig::default()));
        let (server, client) = (server_config(cache.clone()), client_config(&ca));

        let echoed = round_trip(server.clone(), client.clone(), "api.openai.com").await;
        assert_eq!(echoed.unwrap(), b"hello");
        let echoed = round_trip(server.clone(), client.clone(), "eu.openai.azure.com").await;
        assert_eq!(echoed.unwrap(), b"hello");
        assert_eq!(cache.mint_count(), 2);

        // A name the root does not cover gets no certificate: the handshake fails.
        let refused = round_trip(server.clone(), client.clone(), "example.org").await;
        assert!(refused.is_err(), "{refused:?}");
        // Without SNI there is no name to vouch for: no certificate either.
        let mut no_sni = (*client).clone();
        no_sni.enable_sni = false;
        let refused = round_trip(server, Arc::new(no_sni), "api.openai.com").await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(cache.mint_count(), 2);
    }
}
