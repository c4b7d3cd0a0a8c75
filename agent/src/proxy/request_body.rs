//! The app's request body on its way to the provider: streamed frame by frame (data and
//! trailers as they arrive, nothing buffered beyond what the analysis held) and counted.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::{
    HeaderMap,
    body::{Body, Frame, Incoming, SizeHint},
};

/// The app's request body on its way to the provider: a prefix the analysis buffered (maybe
/// rewritten), then the rest of the app's stream, then trailers seen while buffering.
#[derive(Debug)]
pub struct RequestBody {
    prefix: Option<Bytes>,
    inner: Option<Incoming>,
    trailers: Option<HeaderMap>,
    sent: Arc<AtomicU64>,
}

impl RequestBody {
    /// Streams `inner`, adding data bytes to `sent`.
    pub fn new(inner: Incoming, sent: Arc<AtomicU64>) -> Self {
        Self::buffered(Bytes::new(), Some(inner), None, sent)
    }

    /// `prefix`, then what is left of `rest`, then `trailers`.
    pub fn buffered(
        prefix: Bytes,
        rest: Option<Incoming>,
        trailers: Option<HeaderMap>,
        sent: Arc<AtomicU64>,
    ) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            inner: rest,
            trailers,
            sent,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            this.sent.fetch_add(prefix.len() as u64, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if let Some(inner) = &mut this.inner {
            let polled = Pin::new(inner).poll_frame(cx);
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                Poll::Ready(None) => this.inner = None,
                _ => {}
            }
            if !matches!(polled, Poll::Ready(None)) {
                return polled;
            }
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none()
            && self.trailers.is_none()
            && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.inner {
            None => SizeHint::with_exact(prefix),
            Some(inner) => {
                let h = inner.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(h.lower() + prefix);
                if let Some(upper) = h.upper() {
                    hint.set_upper(upper + prefix);
                }
                hint
            }
        }
    }
}
