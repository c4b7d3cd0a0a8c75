//! TLS on both legs of an intercepted connection.
//!
//! [`server`] terminates the app's TLS with a leaf from the local CA (through any
//! `rustls::server::ResolvesServerCert`, in the agent the CA crate's `SniResolver`), with ALPN
//! chosen among what the app offered. [`upstream`] opens verified TLS to the original
//! destination with the app's server name and the app's negotiated protocol. [`failure`]
//! classifies handshake errors, which decides whether an app is remembered as not trusting
//! the llmtrace CA.

pub mod alpn;
pub mod failure;
pub mod server;
pub mod upstream;

pub use alpn::Alpn;
pub use failure::{HandshakeCause, HandshakeFailure};
pub use server::ServerTls;
pub use upstream::{UpstreamTls, UpstreamTlsError};

/// The one crypto provider the agent uses (also the CA crate's), so configs never depend on
/// a process-wide default.
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
