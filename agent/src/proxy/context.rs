//! Typed per-connection and per-exchange context, and the record phase over it.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use hyper::{Method, Version};

use super::{
    ending::BodyEnd,
    inline_analysis::InlineAnalysis,
    metrics::ProxyMetrics,
    record::{ExchangeRecord, RecordTee},
};
use crate::{
    identity::ProcessDetails,
    sink::{SpoolWait, Spooled},
    tls::Alpn,
    transport::ProcessInfo,
};

/// What every exchange of one intercepted connection shares.
#[derive(Debug)]
pub struct ConnectionContext {
    /// Agent-wide connection id.
    pub id: u64,
    /// The app's endpoint.
    pub client: SocketAddr,
    /// Where the app was going.
    pub orig_dst: SocketAddr,
    /// Who the app is.
    pub process: ProcessInfo,
    /// Provider name from the provider list.
    pub provider: Arc<str>,
    /// Executable, command line, container (from /proc at accept).
    pub details: Arc<ProcessDetails>,
    /// Server name from the ClientHello.
    pub sni: Arc<str>,
    /// Protocol negotiated with the app.
    pub alpn: Alpn,
    /// Exchanges started so far.
    pub exchanges: AtomicU32,
    /// Exchanges in flight (an idle connection has none).
    pub in_flight: AtomicUsize,
    /// Body bytes app → provider over all exchanges.
    pub bytes_up: AtomicU64,
    /// Body bytes provider → app over all exchanges.
    pub bytes_down: AtomicU64,
    /// The connection's span: the parent of its exchanges' spans, which HTTP/2 serves on
    /// tasks of their own.
    pub span: tracing::Span,
}

/// What one exchange knows so far; filled phase by phase.
#[derive(Debug)]
pub struct ExchangeContext {
    /// The connection.
    pub conn: Arc<ConnectionContext>,
    /// Position on the connection (1-based).
    pub seq: u32,
    /// Start (monotonic).
    pub started: Instant,
    /// Start (wall clock).
    pub started_at: SystemTime,
    /// Request method.
    pub method: Method,
    /// Request path, without the query.
    pub path: String,
    /// HTTP version of the app's request.
    pub version: Version,
    /// Protocol negotiated with the provider, once connected.
    pub upstream_alpn: Option<Alpn>,
    /// Status sent to the app, once known.
    pub status: Option<u16>,
    /// Time to the response head.
    pub first_byte: Option<Duration>,
    /// Request body bytes sent so far (shared with the request body).
    pub bytes_up: Arc<AtomicU64>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// The LLM analysis of the exchange (inactive when the engine does not recognise it).
    pub llm: InlineAnalysis,
}

/// Owns an exchange's context; emitting the record is its last act, whichever way the
/// exchange ends (including being dropped mid-stream).
#[derive(Debug)]
pub struct Recorder {
    ctx: ExchangeContext,
    records: Arc<RecordTee>,
    done: bool,
}

impl Recorder {
    /// Starts an exchange (the request phase's first step).
    pub fn start(
        tee: &Arc<RecordTee>,
        conn: &Arc<ConnectionContext>,
        head: &hyper::http::request::Parts,
    ) -> Self {
        let seq = conn.exchanges.fetch_add(1, Ordering::Relaxed) + 1;
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        tee.metrics().active_exchanges.inc();
        Self {
            ctx: ExchangeContext {
                conn: conn.clone(),
                seq,
                started: Instant::now(),
                started_at: SystemTime::now(),
                method: head.method.clone(),
                path: head.uri.path().to_owned(),
                version: head.version,
                upstream_alpn: None,
                status: None,
                first_byte: None,
                bytes_up: Arc::new(AtomicU64::new(0)),
                error: None,
                llm: InlineAnalysis::default(),
            },
            records: tee.clone(),
            done: false,
        }
    }

    /// The context, for reading.
    pub fn ctx(&self) -> &ExchangeContext {
        &self.ctx
    }

    /// The context, for filling in.
    pub fn ctx_mut(&mut self) -> &mut ExchangeContext {
        &mut self.ctx
    }

    /// Tees a response chunk being forwarded into the analysis; returns the bytes that end
    /// the stream when the analysis stops it early.
    pub fn tee_chunk(&mut self, chunk: &Bytes) -> Option<Bytes> {
        if self.done {
            return None;
        }
        self.ctx.llm.response_chunk(chunk)
    }

    /// The record phase: builds the record, judges how its body ended, counts it, and hands
    /// it to the tee.
    pub fn finish(&mut self, bytes_down: u64, end: BodyEnd) {
        self.finish_spooled(bytes_down, end, None);
    }

    /// The record phase of a response about to complete for the app: when
    /// `[proxy] spool_before_end_ms` is set, returns what to wait for before releasing the
    /// response's end (its row in the spool file, or that limit), and the metrics to count a
    /// wait that timed out.
    pub fn finish_complete(&mut self, bytes_down: u64) -> Option<(SpoolWait, Arc<ProxyMetrics>)> {
        if self.done {
            return None;
        }
        let Some(max) = self.records.spool_before_end() else {
            self.finish(bytes_down, BodyEnd::Complete);
            return None;
        };
        let (spooled, wait) = Spooled::pair(max);
        self.finish_spooled(bytes_down, BodyEnd::Complete, Some(spooled));
        Some((wait, self.records.metrics().clone()))
    }

    fn finish_spooled(&mut self, bytes_down: u64, end: BodyEnd, spooled: Option<Spooled>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let c = &mut self.ctx;
        c.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        let bytes_up = c.bytes_up.load(Ordering::Relaxed);
        c.conn.bytes_up.fetch_add(bytes_up, Ordering::Relaxed);
        c.conn.bytes_down.fetch_add(bytes_down, Ordering::Relaxed);
        let m = self.records.metrics();
        m.active_exchanges.dec();
        m.exchange(c.status);
        let record = ExchangeRecord {
            connection_id: c.conn.id,
            exchange_seq: c.seq,
            started_at_us: micros_since_epoch(c.started_at),
            first_byte_us: c.first_byte.map(|d| d.as_micros() as u64),
            duration_us: c.started.elapsed().as_micros() as u64,
            // Copied as strings, not through `Display` (`to_string` on these formats).
            sni: Some(String::from(&*c.conn.sni)),
            alpn: c.conn.alpn.as_str(),
            upstream_alpn: c.upstream_alpn.map(Alpn::as_str),
            http_version: Some(version_str(c.version)),
            method: Some(c.method.as_str().to_owned()),
            path: Some(std::mem::take(&mut c.path)),
            status: c.status,
            bytes_up,
            bytes_down,
            client: c.conn.client,
            orig_dst: c.conn.orig_dst,
            process: c.conn.process.clone(),
            provider: c.conn.provider.clone(),
            details: c.conn.details.clone(),
            error: c.error.take(),
            intercepted: true,
            not_intercepted_reason: None,
            llm: None,
        };
        let pending = c.llm.finish(bytes_up);
        self.records
            .emit_exchange_spooled(record, pending, end, spooled);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish(
            0,
            BodyEnd::Failed("the exchange was abandoned before it completed".into()),
        );
    }
}

/// Microseconds since the epoch.
pub fn micros_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `HTTP/1.1`, `HTTP/2.0`, …
pub fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}
