//! Bodies on both legs: streamed frame by frame (data and trailers as they arrive, nothing
//! buffered), counted, and for responses carrying the exchange's [`Recorder`] so the record
//! phase runs when the body ends, fails, or is dropped.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::{context::Recorder, pool::PoolReturn};

/// The app's request body on its way to the provider.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    sent: Arc<AtomicU64>,
}

impl RequestBody {
    /// Streams `inner`, adding data bytes to `sent`.
    pub fn new(inner: Incoming, sent: Arc<AtomicU64>) -> Self {
        Self { inner, sent }
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
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

enum Inner {
    Stream(Incoming),
    Full(Option<Bytes>),
}

/// A response body for the app: the provider's, or a synthetic one.
pub struct ResponseBody {
    inner: Inner,
    bytes: u64,
    recorder: Option<Recorder>,
    pool_return: Option<PoolReturn>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// The provider's body; `pool_return` gives the connection back once it is read to the end.
    pub fn stream(inner: Incoming, recorder: Recorder, pool_return: Option<PoolReturn>) -> Self {
        Self {
            inner: Inner::Stream(inner),
            bytes: 0,
            recorder: Some(recorder),
            pool_return,
        }
    }

    /// A synthetic body.
    pub fn full(data: Bytes, recorder: Option<Recorder>) -> Self {
        Self {
            inner: Inner::Full(Some(data)),
            bytes: 0,
            recorder,
            pool_return: None,
        }
    }

    fn finish(&mut self, error: Option<String>) {
        if let Some(mut r) = self.recorder.take() {
            r.finish(self.bytes, error);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Stream(s) => Pin::new(s).poll_frame(cx),
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let message = format!("the provider's response body failed: {e}");
                this.pool_return = None;
                this.finish(Some(message));
            }
            Poll::Ready(None) => {
                if let Some(p) = this.pool_return.take() {
                    p.give_back();
                }
                this.finish(None);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Stream(s) => s.is_end_stream(),
            Inner::Full(d) => d.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Stream(s) => s.size_hint(),
            Inner::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper drops a body it has read to the end without polling past it when the size is
        // known; only an unfinished stream is an abandoned exchange.
        let complete = match &self.inner {
            Inner::Stream(s) => s.is_end_stream(),
            Inner::Full(d) => d.is_none(),
        };
        if complete {
            if let Some(p) = self.pool_return.take() {
                p.give_back();
            }
            self.finish(None);
        } else {
            self.finish(Some(
                "the app closed the exchange before the response ended".to_owned(),
            ));
        }
    }
}
