//! The HTTP protocols the proxy speaks, as negotiated with ALPN.

/// ALPN id of HTTP/2.
pub const H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1.
pub const HTTP11: &[u8] = b"http/1.1";

/// The protocol of one TLS leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alpn {
    /// `h2` was negotiated.
    H2,
    /// `http/1.1` was negotiated.
    Http11,
    /// No ALPN: HTTP/1.1 by convention.
    None,
}

impl Alpn {
    /// From the negotiated protocol id.
    pub fn from_negotiated(proto: Option<&[u8]>) -> Self {
        match proto {
            Some(H2) => Self::H2,
            Some(HTTP11) => Self::Http11,
            _ => Self::None,
        }
    }

    /// Short name, for records and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H2 => "h2",
            Self::Http11 => "http/1.1",
            Self::None => "none",
        }
    }
}

/// The protocols to offer an app that offered `client`: the ones the proxy speaks, in the
/// app's order. `None` when the app offered ALPN but nothing the proxy speaks (such a
/// connection cannot be intercepted).
pub fn server_protocols(client: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if client.is_empty() {
        return Some(Vec::new());
    }
    let ours: Vec<Vec<u8>> = client
        .iter()
        .filter(|p| p.as_slice() == H2 || p.as_slice() == HTTP11)
        .cloned()
        .collect();
    (!ours.is_empty()).then_some(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_apps_order_and_drops_unknown_protocols() {
        let offered = vec![b"http/1.1".to_vec(), b"spdy/3".to_vec(), b"h2".to_vec()];
        assert_eq!(
            server_protocols(&offered).unwrap(),
            vec![b"http/1.1".to_vec(), b"h2".to_vec()]
        );
        assert_eq!(server_protocols(&[]).unwrap(), Vec::<Vec<u8>>::new());
        assert!(server_protocols(&[b"grpc-exp".to_vec()]).is_none());
    }
}
