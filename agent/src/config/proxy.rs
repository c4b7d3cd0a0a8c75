//! Settings of the interception proxy: limits, timeouts, and the memory of clients that
//! rejected the llmtrace certificate.

use serde::{Deserialize, Serialize};

/// The `[proxy]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Wait this long for a complete TLS ClientHello; a client that sends none in time (or a
    /// protocol where the server speaks first) is relayed untouched.
    pub client_hello_timeout_ms: u64,
    /// Largest ClientHello read before deciding; larger ones are relayed untouched.
    pub max_client_hello_bytes: usize,
    /// Give up a TLS handshake (with the app, or with the provider) after this long.
    pub handshake_timeout_ms: u64,
    /// An HTTP/1.1 request head must arrive within this long. hyper also runs this timer while
    /// a kept-alive connection waits for its next request, so it bounds HTTP/1.1 idle time too.
    pub header_read_timeout_ms: u64,
    /// Close an app connection with no request in flight and no bytes moving for this long.
    pub idle_timeout_ms: u64,
    /// Largest request head (HTTP/1.1 start line and headers; HTTP/2 header list) in bytes;
    /// larger ones get `431`.
    pub max_header_bytes: usize,
    /// At most this many redirected connections are served at once; more are closed at accept.
    pub max_connections: usize,
    /// On shutdown, open connections get this long to finish their exchanges.
    pub drain_timeout_ms: u64,
    /// Idle upstream HTTP/1.1 connections kept per (address, server name, protocol). Keep it
    /// above the expected number of concurrent HTTP/1.1 requests per provider: connections
    /// returned beyond it are closed, and the next request pays a new TLS handshake.
    pub pool_max_idle_per_key: usize,
    /// Idle upstream connections are closed after this long.
    pub pool_idle_timeout_ms: u64,
    /// Capacity of the exchange-record queue to analysis and storage; records that do not
    /// fit are dropped and counted, never waited for.
    pub record_channel_capacity: usize,
    /// Threads that serve the intercepted connections (0: one per available CPU). Each
    /// connection, its provider connection and its body relay stay on one of them, so a
    /// request is not passed between CPUs on its way.
    pub connection_workers: usize,
    /// Threads that finish each exchange's analysis (response parsing, detectors, pricing,
    /// masking) beside the data path, after the response has been forwarded.
    pub analysis_workers: usize,
    /// Niceness added to those threads while they keep up (0–19, capped at 19; 0: none), so
    /// that when the CPU is short the data path runs first and no response waits for an
    /// earlier one's analysis. While a quarter of either bound below is waiting they run at
    /// the agent's own priority again (that needs `CAP_SYS_NICE`, which the agent has as
    /// root), so yielding never makes the pool skip an analysis it would otherwise have done.
    pub analysis_nice: i32,
    /// Exchanges waiting for those threads at most; an exchange arriving beyond it is recorded
    /// without its response analysis (the row says so; counted), never waited for.
    pub analysis_queue: usize,
    /// Response bytes held by exchanges waiting for the analysis at most (same as above).
    /// These bytes are not on top of `max_buffered_bytes`: a waiting exchange's capture keeps
    /// its share of that budget until analysed, so this bound only binds when set below it
    /// (then waiting exchanges can hold no more than this much of the budget, leaving the
    /// rest to exchanges in flight).
    pub analysis_queue_bytes: usize,
    /// How many (uid, executable, server name) keys whose TLS client rejected the llmtrace
    /// certificate are remembered; their connections are relayed untouched.
    pub rejected_cert_capacity: usize,
    /// How long a rejection is remembered.
    pub rejected_cert_ttl_s: u64,
    /// Learn from an app's certificate alert (unknown CA, bad certificate, certificate
    /// unknown, access denied) to relay that (uid, executable, name) untouched for
    /// `rejected_cert_ttl_s`. `false`: every connection to an intercepted name is
    /// intercepted, and apps that do not trust the llmtrace CA fail.
    pub trust_learning: bool,
    /// Bytes held for inspection over all exchanges at once (request bodies buffered for a
    /// verdict, response captures). An exchange that finds it spent is forwarded unanalysed
    /// and its row says so (`analysis_truncated`, `error`).
    pub max_buffered_bytes: usize,
    /// At most this many connections of one uid are intercepted at once (0: no cap); more
    /// follow `[intercept] fail_mode`: relayed untouched (open) or closed (closed), each
    /// recorded with reason `uid_connection_cap`.
    pub max_connections_per_uid: usize,
    /// Hold the end of each intercepted response (its last byte, or the end of its stream)
    /// until the exchange's trace row is in the spool file, at most this long (ms); 0 does
    /// not hold. With it, an exchange the app saw complete is never lost to a SIGKILL of
    /// the agent. A row dropped instead (queue or spool full, disk error) releases at once.
    pub spool_before_end_ms: u64,
    /// HTTP/2: streams an app may open and reset before the proxy accepted them, pending at
    /// once; beyond it the connection gets GOAWAY `ENHANCE_YOUR_CALM` (the "rapid reset"
    /// attack bound).
    pub h2_max_pending_accept_reset_streams: usize,
    /// HTTP/2: streams the proxy may reset because of the app's protocol errors on one
    /// connection; beyond it the connection gets GOAWAY.
    pub h2_max_local_error_reset_streams: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            client_hello_timeout_ms: 10_000,
            max_client_hello_bytes: 64 * 1024,
            handshake_timeout_ms: 10_000,
            header_read_timeout_ms: 60_000,
            idle_timeout_ms: 120_000,
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            drain_timeout_ms: 5_000,
            pool_max_idle_per_key: 256,
            pool_idle_timeout_ms: 60_000,
            record_channel_capacity: 4096,
            connection_workers: 0,
            analysis_workers: 2,
            analysis_nice: 10,
            analysis_queue: 1024,
            analysis_queue_bytes: 256 << 20,
            rejected_cert_capacity: 4096,
            rejected_cert_ttl_s: 3600,
            trust_learning: true,
            max_buffered_bytes: 64 << 20,
            max_connections_per_uid: 4096,
            spool_before_end_ms: 0,
            // hyper's (h2's) defaults, made explicit.
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 1024,
        }
    }
}

impl ProxyConfig {
    /// Checks ranges serde cannot; returns the offending key and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        let positive: [(&'static str, u64); 6] = [
            (
                "proxy.client_hello_timeout_ms",
                self.client_hello_timeout_ms,
            ),
            ("proxy.handshake_timeout_ms", self.handshake_timeout_ms),
            ("proxy.header_read_timeout_ms", self.header_read_timeout_ms),
            ("proxy.idle_timeout_ms", self.idle_timeout_ms),
            ("proxy.pool_idle_timeout_ms", self.pool_idle_timeout_ms),
            ("proxy.rejected_cert_ttl_s", self.rejected_cert_ttl_s),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err((key, "must be positive"));
        }
        if self.max_client_hello_bytes < 512 {
            return Err(("proxy.max_client_hello_bytes", "must be at least 512"));
        }
        // hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
        if self.max_header_bytes < 8192 {
            return Err(("proxy.max_header_bytes", "must be at least 8192"));
        }
        if self.max_connections == 0 || self.max_connections > 1 << 24 {
            return Err(("proxy.max_connections", "must be between 1 and 16777216"));
        }
        if self.max_buffered_bytes == 0 {
            return Err(("proxy.max_buffered_bytes", "must be positive"));
        }
        if self.record_channel_capacity == 0 {
            return Err(("proxy.record_channel_capacity", "must be positive"));
        }
        if !(1..=10_000).contains(&self.h2_max_pending_accept_reset_streams) {
            return Err((
                "proxy.h2_max_pending_accept_reset_streams",
                "must be between 1 and 10000",
            ));
        }
        if !(1..=100_000).contains(&self.h2_max_local_error_reset_streams) {
            return Err((
                "proxy.h2_max_local_error_reset_streams",
                "must be between 1 and 100000",
            ));
        }
        if self.spool_before_end_ms > 60_000 {
            return Err(("proxy.spool_before_end_ms", "must be at most 60000"));
        }
        if self.connection_workers > 256 {
            return Err(("proxy.connection_workers", "must be at most 256"));
        }
        if self.analysis_workers == 0 || self.analysis_workers > 64 {
            return Err(("proxy.analysis_workers", "must be between 1 and 64"));
        }
        if !(0..=19).contains(&self.analysis_nice) {
            return Err(("proxy.analysis_nice", "must be between 0 and 19"));
        }
        Ok(())
    }
}
