//! A stream read a TLS record's worth at a time, whatever the reader asks for.
//!
//! rustls asks its transport for at most 4 KiB per read, so a provider's answer arriving as
//! one 16 KiB record costs four `recvfrom` calls, and a 4.3 KB answer two. Below the
//! provider's TLS, this wrapper reads up to [`CAPACITY`] bytes per call and hands them out
//! from memory. The buffer is kept for the connection's life: freeing it when drained would
//! cost an allocation and, since the agent forbids `unsafe`, a zeroing per refill. Provider
//! connections are few (one per request in flight, then pooled), so the memory is bounded by
//! the concurrency, like rustls' own buffers.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A full TLS record on the wire (16 KiB of payload, its header and the AEAD's expansion),
/// rounded up.
pub const CAPACITY: usize = 17 * 1024;

/// `inner`, read ahead into a buffer of [`CAPACITY`] bytes. Writes go straight to `inner`.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    buf: Box<[u8]>,
    /// `buf[start..end]` is read from `inner` and not yet handed out.
    start: usize,
    end: usize,
}

impl<S> ReadAhead<S> {
    /// Reads `inner` through a buffer.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: vec![0; CAPACITY].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            if out.remaining() >= CAPACITY {
                // A reader asking for as much as the buffer holds gains nothing from a copy.
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let mut fill = ReadBuf::new(&mut this.buf);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut fill))?;
            // Zero bytes is the end of the stream: passed on as an empty read.
            this.start = 0;
            this.end = fill.filled().len();
        }
        let n = (this.end - this.start).min(out.remaining());
        out.put_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A reader handing out `data` in the pieces `sizes` says (cycled), counting its reads.
    struct Pieces {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        reads: Arc<AtomicUsize>,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let i = this.reads.fetch_add(1, Ordering::Relaxed);
            let size = this.sizes[i % this.sizes.len()].max(1);
            let n = size.min(buf.remaining()).min(this.data.len() - this.pos);
            buf.put_slice(&this.data[this.pos..this.pos + n]);
            this.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    fn pieces(data: &[u8], sizes: &[usize]) -> (Pieces, Arc<AtomicUsize>) {
        let reads = Arc::new(AtomicUsize::new(0));
        let p = Pieces {
            data: data.to_vec(),
            pos: 0,
            sizes: sizes.to_vec(),
            reads: reads.clone(),
        };
        (p, reads)
    }

    #[tokio::test]
    async fn a_record_is_read_once_and_handed_out_in_the_readers_pieces() {
        let data: Vec<u8> = (0..16_500u32).map(|i| i as u8).collect();
        let (inner, reads) = pieces(&data, &[usize::MAX]);
        let mut s = ReadAhead::new(inner);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= 4096);
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, data);
        // One read filled the buffer with the whole record, one saw the end.
        assert_eq!(reads.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_large_read_bypasses_the_buffer() {
        let data = vec![7u8; 40_000];
        let (inner, reads) = pieces(&data, &[usize::MAX]);
        let mut s = ReadAhead::new(inner);
        let mut big = vec![0u8; CAPACITY + 100];
        let n = s.read(&mut big).await.unwrap();
        assert_eq!(n, CAPACITY + 100);
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest.len(), data.len() - n);
    }

    proptest! {
        #[test]
        fn every_byte_arrives_once_in_order(
            data in proptest::collection::vec(any::<u8>(), 0..60_000),
            sizes in proptest::collection::vec(1usize..20_000, 1..6),
            asks in proptest::collection::vec(1usize..20_000, 1..6),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let got = rt.block_on(async {
                let (inner, _) = pieces(&data, &sizes);
                let mut s = ReadAhead::new(inner);
                let mut got = Vec::new();
                for i in 0.. {
                    let mut chunk = vec![0u8; asks[i % asks.len()]];
                    let n = s.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&chunk[..n]);
                }
                got
            });
            prop_assert_eq!(got, data);
        }
    }
}
