//! The response body on its way to the app: the provider's streamed frame by frame (nothing
//! buffered), or a synthetic one, counted, and carrying the exchange's [`Recorder`] so the
//! record phase runs when the body ends, fails, or is dropped.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::{context::Recorder, ending::BodyEnd, metrics::ProxyMetrics, pool::PoolReturn};
use crate::sink::{SpoolWait, Waited};

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
    /// What completes the response for the app (its last frame, or the end of the stream:
    /// `None`), held until the exchange's row is in the spool file.
    held: Option<Held>,
}

struct Held {
    wait: SpoolWait,
    frame: Option<Frame<Bytes>>,
    metrics: Arc<ProxyMetrics>,
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
            held: None,
        }
    }

    /// A synthetic body.
    pub fn full(data: Bytes, recorder: Option<Recorder>) -> Self {
        Self {
            inner: Inner::Full(Some(data)),
            bytes: 0,
            recorder,
            pool_return: None,
            held: None,
        }
    }

    fn finish(&mut self, end: BodyEnd) {
        if let Some(mut r) = self.recorder.take() {
            r.finish(self.bytes, end);
        }
    }

    /// Whether the provider's (or the synthetic) body has nothing more to give.
    fn inner_ended(&self) -> bool {
        match &self.inner {
            Inner::Stream(s) => s.is_end_stream(),
            Inner::Full(d) => d.is_none(),
        }
    }

    /// The response completes for the app with `frame` (`None`: the end of the stream): record
    /// the exchange and, when its row must be in the spool first, hold `frame` until then.
    fn complete(
        &mut self,
        frame: Option<Frame<Bytes>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Frame<Bytes>>> {
        let wait = self
            .recorder
            .take()
            .and_then(|mut r| r.finish_complete(self.bytes));
        let Some((wait, metrics)) = wait else {
            return Poll::Ready(frame);
        };
        self.held = Some(Held {
            wait,
            frame,
            metrics,
        });
        self.poll_held(cx)
    }

    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        let Some(held) = &mut self.held else {
            return Poll::Ready(None);
        };
        let waited = std::task::ready!(Pin::new(&mut held.wait).poll(cx));
        if waited == Waited::TimedOut {
            held.metrics.spool_wait_timeouts.inc();
        }
        Poll::Ready(self.held.take().and_then(|h| h.frame))
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
        if this.held.is_some() {
            return this.poll_held(cx).map(|f| f.map(Ok));
        }
        let polled = match &mut this.inner {
            Inner::Stream(s) => Pin::new(s).poll_frame(cx),
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    // The chunk goes to the app with this return; the tee sees it meanwhile.
                    let stop = this.recorder.as_mut().and_then(|r| r.tee_chunk(data));
                    if let Some(event) = stop {
                        // End the stream after the chunk: the stop event, then the end. The
                        // provider connection is abandoned mid-body, so never pooled.
                        this.pool_return = None;
                        this.inner = Inner::Full(Some(event));
                    }
                }
                // Trailers, or the last data of a body of known length: the app has the
                // whole response with this frame.
                if frame.is_trailers() || this.inner_ended() {
                    let Poll::Ready(Some(Ok(frame))) = polled else {
                        unreachable!("matched above")
                    };
                    return this.complete(Some(frame), cx).map(|f| f.map(Ok));
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let message = format!("the provider's response body failed: {e}");
                this.pool_return = None;
                this.finish(BodyEnd::Failed(message.into()));
            }
            Poll::Ready(None) => {
                if let Some(p) = this.pool_return.take() {
                    p.give_back();
                }
                return this.complete(None, cx).map(|f| f.map(Ok));
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner_ended()
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(Held {
            frame: Some(frame), ..
        }) = &self.held
        {
            return SizeHint::with_exact(frame.data_ref().map_or(0, |d| d.len() as u64));
        }
        match &self.inner {
            Inner::Stream(s) => s.size_hint(),
            Inner::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper drops a body it has read to the end without polling past it when the size is
        // known; only an unfinished stream was closed by the app (which may still have had the
        // whole answer: the record phase judges that).
        let complete = match &self.inner {
            Inner::Stream(s) => s.is_end_stream(),
            Inner::Full(d) => d.is_none(),
        };
        if complete {
            if let Some(p) = self.pool_return.take() {
                p.give_back();
            }
            self.finish(BodyEnd::Complete);
        } else {
            self.finish(BodyEnd::AppClosed);
        }
    }
}
