//! The exchange record (what the record phase produces) and the bounded tee that carries it
//! to analysis and storage without ever blocking the data path.

use std::{net::SocketAddr, sync::Arc};

use tokio::sync::mpsc;

use super::{metrics::ProxyMetrics, tap::LlmRecord};
use crate::{identity::ProcessDetails, transport::ProcessInfo};

/// One HTTP exchange, or one relayed connection (`intercepted == false`: only metadata).
#[derive(Debug, Clone)]
pub struct ExchangeRecord {
    /// Agent-wide connection id.
    pub connection_id: u64,
    /// Position of the exchange on its connection (1-based; 0 for relayed connections).
    pub exchange_seq: u32,
    /// Start, microseconds since the epoch.
    pub started_at_us: u64,
    /// Microseconds from start to the response head (`None`: no response).
    pub first_byte_us: Option<u64>,
    /// Microseconds from start to the end of the response body (or of the connection).
    pub duration_us: u64,
    /// Server name from the ClientHello.
    pub sni: Option<String>,
    /// Protocol negotiated with the app (`h2`, `http/1.1`, `none`).
    pub alpn: &'static str,
    /// Protocol negotiated with the provider.
    pub upstream_alpn: Option<&'static str>,
    /// HTTP version of the app's request (`HTTP/1.1`, `HTTP/2.0`).
    pub http_version: Option<&'static str>,
    /// Request method.
    pub method: Option<String>,
    /// Request path without the query string (queries can carry API keys).
    pub path: Option<String>,
    /// Response status sent to the app.
    pub status: Option<u16>,
    /// Body bytes app → provider (for relayed connections: all bytes).
    pub bytes_up: u64,
    /// Body bytes provider → app (for relayed connections: all bytes).
    pub bytes_down: u64,
    /// The app's endpoint.
    pub client: SocketAddr,
    /// Where the app was going.
    pub orig_dst: SocketAddr,
    /// The calling process as the kernel saw it.
    pub process: ProcessInfo,
    /// Provider name from the provider list.
    pub provider: Arc<str>,
    /// Executable, command line, container (from /proc at accept).
    pub details: Arc<ProcessDetails>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Whether the agent terminated TLS and proxied HTTP.
    pub intercepted: bool,
    /// Why not, for relayed connections.
    pub not_intercepted_reason: Option<&'static str>,
    /// The LLM analysis, for exchanges the engine recognised.
    pub llm: Option<Box<LlmRecord>>,
}

/// Sends records to a bounded channel; a full channel drops the record and counts it.
#[derive(Debug, Clone)]
pub struct RecordTee {
    tx: mpsc::Sender<ExchangeRecord>,
    metrics: Arc<ProxyMetrics>,
}

impl RecordTee {
    /// A tee with room for `capacity` records, and its receiving end.
    pub fn channel(
        capacity: usize,
        metrics: Arc<ProxyMetrics>,
    ) -> (Self, mpsc::Receiver<ExchangeRecord>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx, metrics }, rx)
    }

    /// Hands `record` on, or drops it when the consumer is behind or gone.
    pub fn emit(&self, record: ExchangeRecord) {
        if self.tx.try_send(record).is_err() {
            self.metrics.record_drops.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_channel_drops_and_counts() {
        let metrics = Arc::new(ProxyMetrics::default());
        let (tee, mut rx) = RecordTee::channel(1, metrics.clone());
        let record = ExchangeRecord {
            connection_id: 1,
            exchange_seq: 1,
            started_at_us: 0,
            first_byte_us: None,
            duration_us: 0,
            sni: None,
            alpn: "none",
            upstream_alpn: None,
            http_version: None,
            method: None,
            path: None,
            status: None,
            bytes_up: 0,
            bytes_down: 0,
            client: "127.0.0.1:1".parse().unwrap(),
            orig_dst: "127.0.0.2:443".parse().unwrap(),
            process: ProcessInfo {
                pid: 1,
                tid: 1,
                uid: 0,
                gid: 0,
                comm: "t".into(),
                cgroup_id: 0,
                netns_cookie: 0,
            },
            provider: "test".into(),
            details: Arc::default(),
            error: None,
            intercepted: false,
            not_intercepted_reason: None,
            llm: None,
        };
        tee.emit(record.clone());
        tee.emit(record);
        assert_eq!(metrics.record_drops.get(), 1);
        assert!(rx.try_recv().is_ok());
    }
}
