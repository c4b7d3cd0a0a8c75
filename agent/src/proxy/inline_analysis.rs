//! The part of the LLM analysis that runs on the data path, because it decides what moves:
//! each exchange the engine recognises gets an [`llm::Exchange`](crate::llm::Exchange) that
//! sees the request body (bounded, before anything goes upstream, so a verdict can block or
//! redact it), every response chunk as it is forwarded (so a stream can be stopped early), and
//! ends in the record phase, exactly once.
//! The record phase only hands a [`PendingAnalysis`] on: the rest of the analysis (decoding,
//! parsing, detectors, pricing, masking) runs beside the data path, in the analysis pool.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::{
    HeaderMap,
    body::{Body as _, Incoming},
    header::{self, HeaderValue},
    http::{request, response},
};

use super::{
    budget::{ByteBudget, Reservation},
    error::ProxyError,
    metrics::{GuardEvent, ProxyMetrics},
    request_body::RequestBody,
};
use crate::{
    analysis::Action,
    llm::{Engine, Exchange, ExchangeAnalysis, HeaderLookup, RequestHead},
};

/// The analysis state of one exchange (empty when the engine did not recognise it).
#[derive(Debug, Default)]
pub struct InlineAnalysis {
    /// Boxed: the exchange's state is about 2 KB, and this travels inside the response
    /// body, which hyper moves by value several times per response (memmove was 5% of a
    /// connection thread's time with it inline).
    exchange: Option<Box<Exchange>>,
    /// Time spent in the engine, over all phases.
    spent: Duration,
    /// Request body bytes analysed, when the bound cut the body (the rest went on unseen).
    request_inspected: Option<u64>,
    /// The policy asked for a redaction that could not be applied (body cut by the bound).
    redaction_skipped: bool,
    /// Bytes this exchange holds from the agent-wide budget (request body and response
    /// capture); `None` without a budget.
    held: Option<Reservation>,
    /// Most response bytes the engine keeps, so the reservation stops growing there.
    capture_cap: usize,
    /// Response bytes counted against the reservation so far.
    captured: usize,
    /// The budget was spent: part of this exchange went on unanalysed.
    over_budget: bool,
}

/// The reason an exchange over the budget records.
pub const OVER_BUDGET: &str =
    "not fully analysed: the agent-wide inspection budget ([proxy] max_buffered_bytes) was spent";

/// An exchange whose response analysis is still to be done (off the data path).
#[derive(Debug)]
pub struct PendingAnalysis {
    exchange: Box<Exchange>,
    facts: Finishing,
}

/// What the inline part knew that the record needs once the analysis is done.
#[derive(Debug)]
struct Finishing {
    spent: Duration,
    request_dropped_bytes: u64,
    redaction_skipped: bool,
    /// The budget was spent: part of the exchange went on unanalysed.
    over_budget: bool,
    /// The request body was held for inspection (so a spent budget truncated it).
    request_inspected: bool,
    /// The agent-wide budget's bytes for the capture, given back once the analysis is done
    /// (the capture lives until then).
    _held: Option<Reservation>,
}

impl PendingAnalysis {
    /// Response bytes held for the analysis.
    pub fn held_bytes(&self) -> usize {
        self.exchange.held_bytes()
    }

    /// Runs the rest of the analysis and counts it.
    pub fn complete(self, metrics: &ProxyMetrics) -> LlmRecord {
        let t = Instant::now();
        let analysis = self.exchange.finish();
        self.facts.record(analysis, t.elapsed(), metrics)
    }

    /// Records the exchange without its response analysis (the pool had no room), counted.
    pub fn skip(self, metrics: &ProxyMetrics) -> LlmRecord {
        metrics.llm_analysis_skipped.inc();
        let analysis = self.exchange.skip();
        self.facts.record(analysis, Duration::ZERO, metrics)
    }
}

impl Finishing {
    fn record(
        self,
        mut analysis: ExchangeAnalysis,
        more: Duration,
        metrics: &ProxyMetrics,
    ) -> LlmRecord {
        if self.over_budget {
            metrics.guard(GuardEvent::BufferBudgetExhausted);
            analysis.analysis_truncated = true;
            analysis.request_truncated |= self.request_inspected;
            analysis.response_truncated = true;
            analysis.error = Some(match analysis.error.take() {
                Some(e) => format!("{OVER_BUDGET}; {e}"),
                None => OVER_BUDGET.to_owned(),
            });
        }
        if self.redaction_skipped && analysis.action == Action::Redact {
            // Nothing was masked upstream: the trace must not claim otherwise.
            analysis.action = Action::Flag;
            analysis.error.get_or_insert_with(|| {
                "redaction not applied: the request body exceeded the inspection bound".to_owned()
            });
        }
        metrics.llm_exchange(&analysis, self.spent + more);
        LlmRecord {
            analysis,
            request_dropped_bytes: self.request_dropped_bytes,
        }
    }
}

/// What the analysis adds to an exchange record.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRecord {
    /// The engine's summary.
    pub analysis: ExchangeAnalysis,
    /// Request body bytes forwarded without being analysed.
    pub request_dropped_bytes: u64,
}

impl HeaderLookup for HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

fn pairs(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect()
}

impl InlineAnalysis {
    /// Starts analysing when `engine` recognises the request as an LLM API call.
    pub fn start(engine: &Arc<Engine>, head: &request::Parts, sni: &str, at: Instant) -> Self {
        let t = Instant::now();
        let headers = pairs(&head.headers);
        let req = RequestHead {
            method: head.method.as_str(),
            host: sni,
            path: head.uri.path(),
            query: head.uri.query(),
            headers: &headers,
        };
        let exchange = Exchange::start(engine, &req, at).map(Box::new);
        Self {
            exchange,
            capture_cap: engine
                .config
                .max_document_bytes
                .max(engine.config.max_decoded_bytes),
            spent: t.elapsed(),
            ..Self::default()
        }
    }

    /// Holds what this exchange buffers or captures against `budget`.
    #[must_use]
    pub fn with_budget(mut self, budget: &Arc<ByteBudget>) -> Self {
        if self.exchange.is_some() {
            self.held = Some(budget.reservation());
        }
        self
    }

    /// Whether the engine is analysing this exchange.
    pub fn active(&self) -> bool {
        self.exchange.is_some()
    }

    /// The exchange under analysis (for inline control after the request body was read).
    pub fn exchange_mut(&mut self) -> Option<&mut Exchange> {
        self.exchange.as_deref_mut()
    }

    /// The request phase: buffers the body until it ends or `bound` bytes are exceeded (so at
    /// most `bound` plus one read), asks for a verdict and applies it. Returns the body to forward (what was buffered, possibly redacted, then the
    /// rest of the stream untouched) or the provider-shaped refusal.
    pub async fn request(
        &mut self,
        head: &mut request::Parts,
        body: Incoming,
        bound: usize,
        sent: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<RequestBody, ProxyError> {
        let Some(ex) = self.exchange.as_deref_mut() else {
            return Ok(RequestBody::new(body, sent));
        };
        let buffered = buffer(body, bound, self.held.as_mut()).await?;
        if buffered.over_budget {
            // Forwarded as it came, never judged on a part the budget happened to allow.
            self.over_budget = true;
            self.request_inspected = Some(0);
            return Ok(RequestBody::buffered(
                buffered.data,
                buffered.rest,
                buffered.trailers,
                sent,
            ));
        }
        let t = Instant::now();
        let verdict = ex.request_body(&buffered.data, buffered.rest.is_none());
        self.spent += t.elapsed();
        if let Some(refusal) = verdict.block {
            return Err(ProxyError::Policy(refusal));
        }
        let mut data = buffered.data;
        match (verdict.redacted_body, &buffered.rest) {
            (Some(redacted), None) => {
                data = Bytes::from(redacted);
                // The engine returns the redacted body identity-encoded.
                head.headers.remove(header::CONTENT_ENCODING);
                if head.headers.contains_key(header::CONTENT_LENGTH) {
                    head.headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(data.len()));
                }
            }
            (Some(_), Some(_)) => self.redaction_skipped = true,
            (None, _) => {}
        }
        if buffered.rest.is_some() {
            self.request_inspected = Some(data.len() as u64);
        }
        Ok(RequestBody::buffered(
            data,
            buffered.rest,
            buffered.trailers,
            sent,
        ))
    }

    /// The response head, before it goes to the app. An event stream the monitor may end
    /// early loses its `Content-Length`: the stop event changes the length.
    pub fn response_head(&mut self, head: &mut response::Parts) {
        if let Some(ex) = self.exchange.as_deref_mut() {
            let sse = head
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
            if sse && ex.stream_may_stop() {
                head.headers.remove(header::CONTENT_LENGTH);
            }
            let t = Instant::now();
            ex.response_head(head.status.as_u16(), &head.headers);
            self.spent += t.elapsed();
        }
    }

    /// A response chunk that is being forwarded; returns the bytes that end the stream when
    /// the monitor stops it.
    pub fn response_chunk(&mut self, chunk: &Bytes) -> Option<Bytes> {
        let ex = self.exchange.as_deref_mut()?;
        if let Some(held) = self.held.as_mut() {
            let grow = chunk
                .len()
                .min(self.capture_cap.saturating_sub(self.captured));
            if self.over_budget || (grow > 0 && !held.grow(grow)) {
                // Not captured: the rest of the response goes to the app unanalysed.
                self.over_budget = true;
                return None;
            }
            self.captured += grow;
        }
        let t = Instant::now();
        let stop = ex.response_bytes(chunk, t);
        self.spent += t.elapsed();
        stop.map(|s| Bytes::from(s.event))
    }

    /// The record phase: ends the inline part (once) and hands on the rest. `bytes_up` is
    /// what was forwarded of the request body.
    pub fn finish(&mut self, bytes_up: u64) -> Option<PendingAnalysis> {
        let exchange = self.exchange.take()?;
        Some(PendingAnalysis {
            exchange,
            facts: Finishing {
                spent: self.spent,
                request_dropped_bytes: self
                    .request_inspected
                    .map_or(0, |seen| bytes_up.saturating_sub(seen)),
                redaction_skipped: self.redaction_skipped,
                over_budget: self.over_budget,
                request_inspected: self.request_inspected.is_some(),
                _held: self.held.take(),
            },
        })
    }
}

/// A request body read up to a bound.
struct Buffered {
    data: Bytes,
    /// The unread rest, when the bound was reached before the end.
    rest: Option<Incoming>,
    trailers: Option<HeaderMap>,
    /// The budget refused to hold more: `data` is what had arrived, `rest` the remainder.
    over_budget: bool,
}

/// How long inspection waits for the rest of a request body. A client that stalls mid-body
/// does not hold the buffer: what arrived is forwarded unanalysed (like a body over the bound)
/// and the rest streams through as it comes.
const INSPECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The chunks of a body as they arrived, joined once at the end: a body of one chunk (most
/// JSON requests) is used as it is, a longer one is copied once into a buffer of its size
/// (appending to a growing buffer copied a 64 KB prompt about twice over). Chunks after the
/// first are kept whole only from [`KEEP_FROM`] bytes; smaller ones are copied together as
/// they come: a body sent in tiny chunks (one byte each, chunked encoding) then costs about
/// its bytes, which the memory budget counts, not a list entry (32 bytes) per byte.
#[derive(Default)]
struct Chunks {
    parts: Vec<Bytes>,
    /// Small chunks since the last part, copied together.
    small: BytesMut,
    len: usize,
}

/// The smallest chunk kept as it is (after the first).
const KEEP_FROM: usize = 4096;

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        let first = self.parts.is_empty() && self.small.is_empty();
        if first || chunk.len() >= KEEP_FROM {
            if !self.small.is_empty() {
                self.parts.push(self.small.split().freeze());
            }
            self.parts.push(chunk);
        } else {
            self.small.extend_from_slice(&chunk);
        }
    }

    /// The body read so far, with `rest` unread (no trailers, within the budget).
    fn read(self, rest: Option<Incoming>) -> Buffered {
        Buffered {
            data: self.into_bytes(),
            rest,
            trailers: None,
            over_budget: false,
        }
    }

    fn into_bytes(mut self) -> Bytes {
        if !self.small.is_empty() {
            self.parts.push(self.small.freeze());
        }
        if self.parts.len() <= 1 {
            return self.parts.pop().unwrap_or_default();
        }
        let mut joined = BytesMut::with_capacity(self.len);
        for part in &self.parts {
            joined.extend_from_slice(part);
        }
        joined.freeze()
    }
}

async fn buffer(
    mut body: Incoming,
    bound: usize,
    mut held: Option<&mut Reservation>,
) -> Result<Buffered, ProxyError> {
    let mut data = Chunks::default();
    let deadline = tokio::time::Instant::now() + INSPECT_WAIT;
    while data.len <= bound {
        let Ok(next) = tokio::time::timeout_at(deadline, body.frame()).await else {
            return Ok(data.read(Some(body)));
        };
        let Some(frame) = next else {
            return Ok(data.read(None));
        };
        let frame = frame
            .map_err(|e| ProxyError::BadRequest(format!("the app's request body failed: {e}")))?;
        match frame.into_data() {
            Ok(chunk) => {
                let grown = chunk.len();
                data.push(chunk);
                if held.as_mut().is_some_and(|h| !h.grow(grown)) {
                    let rest = (!body.is_end_stream()).then_some(body);
                    return Ok(Buffered {
                        over_budget: true,
                        ..data.read(rest)
                    });
                }
            }
            Err(frame) => {
                return Ok(Buffered {
                    trailers: frame.into_trailers().ok(),
                    ..data.read(None)
                });
            }
        }
    }
    Ok(data.read((!body.is_end_stream()).then_some(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_join_in_order_and_a_single_chunk_is_not_copied() {
        assert!(Chunks::default().into_bytes().is_empty());
        let one = Bytes::from_static(b"{\"model\":\"m\"}");
        let mut c = Chunks::default();
        c.push(one.clone());
        let got = c.into_bytes();
        assert_eq!(got, one);
        assert_eq!(got.as_ptr(), one.as_ptr(), "one chunk is used as it is");
        let big = Bytes::from(vec![b'x'; KEEP_FROM]);
        let mut c = Chunks::default();
        let mut want = Vec::new();
        for part in [&b"ab"[..], b"", b"cde", &big, b"f", &big, &big] {
            want.extend_from_slice(part);
            c.push(Bytes::copy_from_slice(part));
        }
        assert_eq!(c.len, want.len());
        assert_eq!(c.into_bytes(), want);
    }

    #[test]
    fn tiny_chunks_are_copied_together_not_listed_one_by_one() {
        let mut c = Chunks::default();
        for _ in 0..100_000 {
            c.push(Bytes::from_static(b"a"));
        }
        // The first chunk, then every other byte in one buffer.
        assert_eq!(c.parts.len(), 1);
        assert_eq!(c.small.len(), 99_999);
        let mut c2 = Chunks::default();
        for i in 0..10 {
            c2.push(Bytes::from_static(b"ab"));
            c2.push(Bytes::from(vec![u8::try_from(i).unwrap(); KEEP_FROM]));
        }
        // Each kept chunk holds at least KEEP_FROM bytes, or is the first, or the small ones
        // copied together before one.
        assert!(c2.parts.len() <= 1 + 2 * 10, "{}", c2.parts.len());
        assert_eq!(c2.into_bytes().len(), 10 * (2 + KEEP_FROM));
    }
}
