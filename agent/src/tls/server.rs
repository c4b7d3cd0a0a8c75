//! Terminating the app's TLS with a leaf certificate from the local CA.

use std::{sync::Arc, time::Duration};

use rustls::{
    ServerConfig,
    server::{ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions},
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use super::{
    HandshakeFailure,
    alpn::{H2, HTTP11},
};

/// Every ALPN list [`super::alpn::server_protocols`] can produce.
const PROTOCOL_LISTS: [&[&[u8]]; 5] = [&[], &[H2], &[HTTP11], &[H2, HTTP11], &[HTTP11, H2]];

/// Server configs for the app leg, one per ALPN list, sharing the resolver and session cache.
#[derive(Debug, Clone)]
pub struct ServerTls {
    configs: Vec<(Vec<Vec<u8>>, Arc<ServerConfig>)>,
}

impl ServerTls {
    /// Configs whose certificates come from `resolver` (per server name).
    pub fn new(resolver: &Arc<dyn ResolvesServerCert>) -> Self {
        let sessions: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(4096);
        let configs = PROTOCOL_LISTS
            .iter()
            .map(|list| {
                let mut config = ServerConfig::builder_with_provider(super::crypto_provider())
                    .with_safe_default_protocol_versions()
                    .expect("the ring provider supports the default protocol versions")
                    .with_no_client_auth()
                    .with_cert_resolver(resolver.clone());
                let list: Vec<Vec<u8>> = list.iter().map(|p| p.to_vec()).collect();
                config.alpn_protocols.clone_from(&list);
                config.session_storage = sessions.clone();
                (list, Arc::new(config))
            })
            .collect();
        Self { configs }
    }

    /// Completes the handshake on `stream` (which replays the sniffed ClientHello), offering
    /// `protocols` (from [`super::alpn::server_protocols`]).
    pub async fn accept<S>(
        &self,
        stream: S,
        protocols: &[Vec<u8>],
        timeout: Duration,
    ) -> Result<TlsStream<S>, HandshakeFailure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self
            .configs
            .iter()
            .find(|(list, _)| list.as_slice() == protocols)
            .map_or_else(|| self.configs[0].1.clone(), |(_, c)| c.clone());
        let accept = TlsAcceptor::from(config).accept(stream);
        match tokio::time::timeout(timeout, accept).await {
            Err(_) => Err(HandshakeFailure::Timeout),
            Ok(Err(e)) => Err(HandshakeFailure::from_io(&e)),
            Ok(Ok(tls)) => Ok(tls),
        }
    }
}
