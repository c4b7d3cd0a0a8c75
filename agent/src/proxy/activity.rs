//! Idle tracking for app connections: whether bytes moved since the connection's idle watch
//! last looked (the watch keeps the time itself, a few times per idle timeout).
//!
//! A flag, not a timestamp: a read or a write of the connection only stores `true`, where
//! reading the clock on each of them cost more than the rest of this wrapper (a clock read is
//! a few hundred cycles on a virtual machine).

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Whether a read or a write moved bytes since [`Self::take_moved`] last looked.
#[derive(Debug, Default)]
pub struct Activity {
    moved: AtomicBool,
}

impl Activity {
    /// No bytes moved yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn touch(&self) {
        // A plain store (no read-modify-write): the flag is set far more often than read.
        self.moved.store(true, Ordering::Relaxed);
    }

    /// Whether bytes moved since the last call.
    pub fn take_moved(&self) -> bool {
        self.moved.swap(false, Ordering::Relaxed)
    }
}

/// A stream that records activity in an [`Activity`].
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn reads_and_writes_that_move_bytes_count_once_per_look() {
        let activity = Activity::new();
        let (near, mut far) = tokio::io::duplex(64);
        let mut tracked = Tracked::new(near, activity.clone());
        assert!(!activity.take_moved(), "nothing moved yet");

        tracked.write_all(b"ping").await.unwrap();
        assert!(activity.take_moved());
        assert!(!activity.take_moved(), "a look clears the flag");

        // An empty write and a flush move nothing.
        assert_eq!(tracked.write(b"").await.unwrap(), 0);
        tracked.flush().await.unwrap();
        assert!(!activity.take_moved());

        far.write_all(b"pong").await.unwrap();
        let mut buf = [0u8; 4];
        tracked.read_exact(&mut buf).await.unwrap();
        assert!(activity.take_moved());

        // The far end closing is a read of nothing.
        drop(far);
        assert_eq!(tracked.read(&mut buf).await.unwrap(), 0);
        assert!(!activity.take_moved());
    }
}
