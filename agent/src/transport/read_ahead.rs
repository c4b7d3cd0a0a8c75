//! A stream read a TLS record's worth at a time, whatever the reader asks for.
//!
//! rustls usually asks its transport for 4 KiB per read (more only while it holds part of a
//! record), so a provider's answer arriving as one 16 KiB record costs four `recvfrom` calls,
//! and a 4.3 KB answer two. Below TLS, this wrapper reads up to [`CAPACITY`] bytes per call
//! and hands them out from memory; asks of that size or more go straight to the stream.
//!
//! Two ways to hold the buffer, since the agent forbids `unsafe` and a fresh buffer must be
//! zeroed:
//! - [`ReadAhead::kept`]: allocated once, kept for the connection's life. For provider
//!   connections, where every answer is read through it. They number the requests in
//!   flight, the idle pooled ones (`max_idle` per provider), the HTTP/2 ones and the upgraded
//!   tunnels: 17 KiB each, beside rustls' own buffers of about that size.
//! - [`ReadAhead::on_demand`]: reads go straight to the reader until one fills the reader's
//!   buffer (more is likely waiting); then a buffer serves until a read finds the socket
//!   empty, and is freed. For app connections: many sit idle between requests, and most
//!   requests fit one read, so they pay neither memory nor a copy.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A full TLS record on the wire (16 KiB of payload, its header and the AEAD's expansion),
/// rounded up.
pub const CAPACITY: usize = 17 * 1024;

/// `inner`, read ahead through a buffer of [`CAPACITY`] bytes. Writes go straight to `inner`.
pub struct ReadAhead<S> {
    inner: S,
    buf: Option<Box<[u8]>>,
    /// `buf[start..end]` is read from `inner` and not yet handed out.
    start: usize,
    end: usize,
    /// The buffer lives as long as the stream (else it is freed when a read finds the
    /// socket empty).
    keep: bool,
}

impl<S: std::fmt::Debug> std::fmt::Debug for ReadAhead<S> {
    // Not the buffer's 17 KiB.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("inner", &self.inner)
            .field("buffered", &(self.end - self.start))
            .field("has_buffer", &self.buf.is_some())
            .field("keep", &self.keep)
            .finish()
    }
}

impl<S> ReadAhead<S> {
    /// Reads `inner` through a buffer kept for the stream's life.
    pub fn kept(inner: S) -> Self {
        Self {
            inner,
            buf: Some(new_buffer()),
            start: 0,
            end: 0,
            keep: true,
        }
    }

    /// Reads `inner` through a buffer only while a reader's buffer would fill up.
    pub fn on_demand(inner: S) -> Self {
        Self {
            inner,
            buf: None,
            start: 0,
            end: 0,
            keep: false,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

fn new_buffer() -> Box<[u8]> {
    vec![0; CAPACITY].into_boxed_slice()
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            // Nothing can be handed out: no read (and no empty read taken for the end).
            return Poll::Ready(Ok(()));
        }
        if this.start == this.end {
            let Some(buf) = this.buf.as_mut().filter(|_| out.remaining() < CAPACITY) else {
                // No buffer, or a reader asking for as much as it holds: a copy gains nothing.
                let asked = out.remaining();
                let before = out.filled().len();
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                if out.filled().len() - before == asked && this.buf.is_none() {
                    this.buf = Some(new_buffer());
                }
                return Poll::Ready(Ok(()));
            };
            let mut fill = ReadBuf::new(buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut fill) {
                Poll::Ready(r) => r?,
                Poll::Pending => {
                    if !this.keep {
                        // Nothing more to read for now: an idle stream holds no buffer.
                        this.buf = None;
                    }
                    return Poll::Pending;
                }
            }
            // Zero bytes is the end of the stream: passed on as an empty read.
            this.start = 0;
            this.end = fill.filled().len();
        }
        if let Some(buf) = this.buf.as_deref() {
            let n = (this.end - this.start).min(out.remaining());
            out.put_slice(&buf[this.start..this.start + n]);
            this.start += n;
        }
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

    /// A reader handing out `data` in the pieces `sizes` says (cycled; 0: not ready this
    /// time, woken at once), counting its reads.
    struct Pieces {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        reads: Arc<AtomicUsize>,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let i = this.reads.fetch_add(1, Ordering::Relaxed);
            let size = this.sizes[i % this.sizes.len()];
            if size == 0 && this.pos < this.data.len() {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = size
                .max(1)
                .min(buf.remaining())
                .min(this.data.len() - this.pos);
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

    /// Reads `s` to its end in `ask`-byte reads.
    async fn drain<S: AsyncRead + Unpin>(s: &mut ReadAhead<S>, ask: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = vec![0u8; ask];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            if n == 0 {
                return got;
            }
            assert!(n <= ask);
            got.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn a_record_is_read_once_and_handed_out_in_the_readers_pieces() {
        let data: Vec<u8> = (0..16_500u32).map(|i| i as u8).collect();
        let (inner, reads) = pieces(&data, &[usize::MAX]);
        let mut s = ReadAhead::kept(inner);
        assert_eq!(drain(&mut s, 4096).await, data);
        // One read filled the buffer with the whole record, one saw the end.
        assert_eq!(reads.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_large_read_bypasses_the_buffer() {
        let data = vec![7u8; 40_000];
        let (inner, reads) = pieces(&data, &[usize::MAX]);
        let mut s = ReadAhead::kept(inner);
        let mut big = vec![0u8; CAPACITY + 100];
        let n = s.read(&mut big).await.unwrap();
        assert_eq!(n, CAPACITY + 100);
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest.len(), data.len() - n);
    }

    #[tokio::test]
    async fn on_demand_a_short_message_is_read_straight_through() {
        let data = vec![1u8; 300];
        let (inner, reads) = pieces(&data, &[usize::MAX]);
        let mut s = ReadAhead::on_demand(inner);
        assert_eq!(drain(&mut s, 4096).await, data);
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        assert!(s.buf.is_none(), "no buffer for what fits one read");
    }

    #[tokio::test]
    async fn on_demand_a_long_message_is_read_ahead_after_the_first_full_read() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (inner, reads) = pieces(&data, &[usize::MAX]);
        let mut s = ReadAhead::on_demand(inner);
        assert_eq!(drain(&mut s, 4096).await, data);
        // 4,096 bytes straight through, then 17 KiB a read (6), then the end: not 26 reads.
        assert_eq!(reads.load(Ordering::Relaxed), 8);
    }

    #[tokio::test]
    async fn on_demand_an_idle_stream_frees_its_buffer() {
        let data = vec![2u8; 10_000];
        // All of it at once, then not ready.
        let (inner, _) = pieces(&data, &[usize::MAX, 0]);
        let mut s = ReadAhead::on_demand(inner);
        let mut chunk = [0u8; 4096];
        assert_eq!(s.read(&mut chunk).await.unwrap(), 4096);
        assert!(s.buf.is_some());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = ReadBuf::new(&mut chunk);
        // The source is not ready: the drained buffer goes.
        assert!(Pin::new(&mut s).poll_read(&mut cx, &mut out).is_pending());
        assert!(s.buf.is_none());
        let mut kept = ReadAhead::kept(pieces(&data, &[0]).0);
        assert!(
            Pin::new(&mut kept)
                .poll_read(&mut cx, &mut out)
                .is_pending()
        );
        assert!(kept.buf.is_some(), "a kept buffer stays");
    }

    #[test]
    fn a_reader_with_no_room_reads_nothing() {
        let (inner, reads) = pieces(b"hello", &[usize::MAX]);
        let mut s = ReadAhead::on_demand(inner);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut full = ReadBuf::new(&mut []);
        assert!(Pin::new(&mut s).poll_read(&mut cx, &mut full).is_ready());
        assert_eq!(reads.load(Ordering::Relaxed), 0);
    }

    proptest! {
        #[test]
        fn every_byte_arrives_once_in_order(
            data in proptest::collection::vec(any::<u8>(), 0..60_000),
            sizes in proptest::collection::vec(prop_oneof![Just(0usize), 1usize..20_000], 1..6),
            asks in proptest::collection::vec(1usize..20_000, 1..6),
            lead in 0usize..64,
            keep in any::<bool>(),
        ) {
            // Something arrives in every round of pieces.
            let sizes = [sizes.as_slice(), &[usize::MAX]].concat();
            let (inner, _) = pieces(&data, &sizes);
            let mut s = if keep { ReadAhead::kept(inner) } else { ReadAhead::on_demand(inner) };
            // Polled by hand: a read that never completes fails here instead of hanging.
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut polls = 0;
            let mut got = Vec::new();
            for i in 0.. {
                // The reader's buffer already holds `lead` bytes of its own.
                let mut chunk = vec![0u8; lead + asks[i % asks.len()]];
                let mut out = ReadBuf::new(&mut chunk);
                out.put_slice(&vec![0xEE; lead]);
                loop {
                    polls += 1;
                    prop_assert!(polls < 100_000, "a read stays pending");
                    if let Poll::Ready(r) = Pin::new(&mut s).poll_read(&mut cx, &mut out) {
                        r.unwrap();
                        break;
                    }
                }
                prop_assert!(out.filled()[..lead].iter().all(|&b| b == 0xEE));
                if out.filled().len() == lead {
                    break;
                }
                got.extend_from_slice(&out.filled()[lead..]);
            }
            prop_assert_eq!(got, data);
        }
    }
}
