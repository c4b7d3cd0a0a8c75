//! Why a TLS handshake with an app failed.

use std::io;

use rustls::AlertDescription;

/// A failed handshake with the app, classified.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    #[error("the app rejected the llmtrace certificate (alert {0:?})")]
    RejectedCertificate(AlertDescription),
    #[error("the app closed the connection during the TLS handshake")]
    ClosedDuringHandshake,
    #[error("the TLS handshake with the app timed out")]
    Timeout,
    #[error("no leaf certificate for this server name")]
    NoCertificate,
    #[error("TLS handshake with the app failed: {0}")]
    Protocol(String),
}

impl HandshakeFailure {
    /// Classifies an error from `tokio_rustls::TlsAcceptor::accept`.
    pub fn from_io(e: &io::Error) -> Self {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return match tls {
                rustls::Error::AlertReceived(
                    alert @ (AlertDescription::UnknownCA
                    | AlertDescription::BadCertificate
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::AccessDenied),
                ) => Self::RejectedCertificate(*alert),
                rustls::Error::General(m) if m.contains("certificate") => Self::NoCertificate,
                other => Self::Protocol(other.to_string()),
            };
        }
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => Self::ClosedDuringHandshake,
            _ => Self::Protocol(e.to_string()),
        }
    }

    /// Whether the app said, with a TLS alert, that it does not trust the llmtrace
    /// certificate (unknown CA, bad certificate, certificate unknown, access denied). A close
    /// or a timeout never counts: any process can produce one to opt itself out of inspection.
    pub fn is_certificate_rejection(&self) -> bool {
        matches!(self, Self::RejectedCertificate(_))
    }

    /// The kind of failure, without its details (the metric's label).
    pub fn cause(&self) -> HandshakeCause {
        match self {
            Self::RejectedCertificate(_) => HandshakeCause::RejectedCertificate,
            Self::ClosedDuringHandshake => HandshakeCause::ClosedDuringHandshake,
            Self::Timeout => HandshakeCause::Timeout,
            Self::NoCertificate => HandshakeCause::NoCertificate,
            Self::Protocol(_) => HandshakeCause::Protocol,
        }
    }
}

/// A [`HandshakeFailure`]'s kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeCause {
    /// See [`HandshakeFailure::RejectedCertificate`].
    RejectedCertificate,
    /// See [`HandshakeFailure::ClosedDuringHandshake`].
    ClosedDuringHandshake,
    /// See [`HandshakeFailure::Timeout`].
    Timeout,
    /// See [`HandshakeFailure::NoCertificate`].
    NoCertificate,
    /// See [`HandshakeFailure::Protocol`].
    Protocol,
}

impl HandshakeCause {
    /// Short stable name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RejectedCertificate => "rejected_certificate",
            Self::ClosedDuringHandshake => "closed_during_handshake",
            Self::Timeout => "timeout",
            Self::NoCertificate => "no_certificate",
            Self::Protocol => "protocol",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_alerts_and_closes() {
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnknownCA),
        );
        let f = HandshakeFailure::from_io(&alert);
        assert!(f.is_certificate_rejection(), "{f}");
        for kind in [
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
        ] {
            let close = HandshakeFailure::from_io(&io::Error::new(kind, "closed"));
            assert_eq!(close.cause(), HandshakeCause::ClosedDuringHandshake);
            assert!(
                !close.is_certificate_rejection(),
                "a close is not a rejection"
            );
        }
        assert!(!HandshakeFailure::Timeout.is_certificate_rejection());
        let unsupported = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::UnsupportedCertificate),
        );
        assert!(!HandshakeFailure::from_io(&unsupported).is_certificate_rejection());
        let other = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
        );
        let f = HandshakeFailure::from_io(&other);
        assert!(!f.is_certificate_rejection());
        assert_eq!(f.cause().as_str(), "protocol");
    }
}
