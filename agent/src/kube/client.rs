//! A GET over HTTPS to the API server: one hyper HTTP/1.1 connection per request (a list or a
//! long-lived watch), verified against the cluster CA, authenticated with the bearer token.

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Request, Response, body::Incoming, header};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::config::Endpoint;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading the CA file {path}: {source}")]
    Ca {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the CA file {0} holds no usable certificate")]
    NoCa(String),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("reading the token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("connecting to the API server: {0}")]
    Connect(std::io::Error),
    #[error("connecting to the API server timed out")]
    ConnectTimeout,
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// Connection settings for the API server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    endpoint: Endpoint,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    token_file: PathBuf,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl ApiClient {
    /// Trusts only the certificates in `ca_file`.
    pub fn new(
        endpoint: Endpoint,
        ca_file: &std::path::Path,
        token_file: PathBuf,
    ) -> Result<Self, ClientError> {
        let path = ca_file.display().to_string();
        let mut roots = RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .and_then(Iterator::collect)
            .map_err(|source| ClientError::Ca {
                path: path.clone(),
                source,
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ClientError::NoCa(path));
        }
        let tls = ClientConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(endpoint.host.clone())
            .map_err(|_| ClientError::ServerName(endpoint.host.clone()))?;
        Ok(Self {
            endpoint,
            server_name,
            tls: Arc::new(tls),
            token_file,
        })
    }

    /// `GET path_and_query`; the response body streams on its own connection.
    pub async fn get(&self, path_and_query: &str) -> Result<Response<Incoming>, ClientError> {
        let token =
            std::fs::read_to_string(&self.token_file).map_err(|source| ClientError::Token {
                path: self.token_file.display().to_string(),
                source,
            })?;
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::ConnectTimeout)?
            .map_err(ClientError::Connect)?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TlsConnector::from(self.tls.clone()).connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| ClientError::ConnectTimeout)?
        .map_err(ClientError::Connect)?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        // The connection task ends when the response body has been read or dropped.
        tokio::spawn(conn);
        let authority = if self.endpoint.host.contains(':') {
            format!("[{}]:{}", self.endpoint.host, self.endpoint.port)
        } else {
            format!("{}:{}", self.endpoint.host, self.endpoint.port)
        };
        let request = Request::get(path_and_query)
            .header(header::HOST, authority)
            .header(header::AUTHORIZATION, format!("Bearer {}", token.trim()))
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())?;
        Ok(send.send_request(request).await?)
    }
}
