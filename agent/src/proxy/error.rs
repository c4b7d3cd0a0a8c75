//! Errors of one exchange, with where they came from; [`ProxyError::synthetic_status`] is the
//! one place that decides what the app is told.

use hyper::StatusCode;

use crate::{llm::BlockResponse, tls::UpstreamTlsError, transport::upstream::ConnectError};

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
    /// No response head within `[upstream] response_timeout_ms`.
    #[error("the provider sent no response within {0:?} ([upstream] response_timeout_ms)")]
    UpstreamTimeout(std::time::Duration),
    #[error("the request cannot be forwarded: {0}")]
    BadRequest(String),
    /// The request names another host than the connection's TLS server name.
    #[error("misdirected request: {0}")]
    Misdirected(String),
    /// The analysis policy refused the request; the app gets the provider-shaped refusal.
    #[error("refused by policy before reaching the provider")]
    Policy(BlockResponse),
}

impl ProxyError {
    /// The status of the synthetic response the app gets instead of the provider's.
    pub fn synthetic_status(&self) -> StatusCode {
        match self {
            Self::UpstreamConnect(ConnectError::Timeout { .. })
            | Self::UpstreamTls(UpstreamTlsError::Timeout { .. })
            | Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamConnect(_)
            | Self::UpstreamTls(_)
            | Self::UpstreamHandshake(_)
            | Self::UpstreamRequest(_) => StatusCode::BAD_GATEWAY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::Policy(r) => StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN),
        }
    }

    /// Whether the error is on the provider's side (for logs: the app did nothing wrong).
    pub fn is_upstream(&self) -> bool {
        !matches!(
            self,
            Self::BadRequest(_) | Self::Misdirected(_) | Self::Policy(_)
        )
    }
}
