//! Errors of one exchange, with where they came from; [`ProxyError::synthetic_status`] is the
//! one place that decides what the app is told.

use hyper::StatusCode;

use crate::{tls::UpstreamTlsError, transport::upstream::ConnectError};

/// Why an exchange could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot reach the provider: {0}")]
    UpstreamConnect(#[from] ConnectError),
    #[error(transparent)]
    UpstreamTls(#[from] UpstreamTlsError),
    #[error("HTTP handshake with the provider failed: {0}")]
    UpstreamHandshake(hyper::Error),
    #[error("the provider did not answer the request: {0}")]
    UpstreamRequest(hyper::Error),
    #[error("the request cannot be forwarded: {0}")]
    BadRequest(String),
    #[error("blocked by analysis: {message}")]
    Blocked { status: StatusCode, message: String },
}

impl ProxyError {
    /// The status of the synthetic response the app gets instead of the provider's.
    pub fn synthetic_status(&self) -> StatusCode {
        match self {
            Self::UpstreamConnect(ConnectError::Timeout { .. })
            | Self::UpstreamTls(UpstreamTlsError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamConnect(_)
            | Self::UpstreamTls(_)
            | Self::UpstreamHandshake(_)
            | Self::UpstreamRequest(_) => StatusCode::BAD_GATEWAY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Blocked { status, .. } => *status,
        }
    }

    /// Whether the error is on the provider's side (for logs: the app did nothing wrong).
    pub fn is_upstream(&self) -> bool {
        !matches!(self, Self::BadRequest(_) | Self::Blocked { .. })
    }
}
