//! Byte-for-byte relay between the app and the original destination.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

/// Bytes moved by a splice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpliceStats {
    /// App → destination.
    pub bytes_up: u64,
    /// Destination → app.
    pub bytes_down: u64,
}

/// Relays both directions until both sides have closed. A side that finishes writing is
/// half-closed on the other (`shutdown(SHUT_WR)`), so request/response protocols that rely on
/// half-close keep working. Any streams (some bytes may already have been read, e.g. a
/// ClientHello).
pub async fn splice_io<A, B>(a: &mut A, b: &mut B) -> io::Result<SpliceStats>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (bytes_up, bytes_down) = tokio::io::copy_bidirectional(a, b).await?;
    Ok(SpliceStats {
        bytes_up,
        bytes_down,
    })
}
