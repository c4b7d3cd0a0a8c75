//! The trace row: one per HTTP exchange that reached the agent.
//!
//! Field names are binding: they are the ClickHouse column names (see
//! `deploy/clickhouse/`) and the `llmtrace tail --json` field names. The two
//! `Nested` columns (`tool_calls`, `findings`) are objects in JSON and
//! parallel `name.field` arrays in ClickHouse; `rowbinary` does that mapping.

use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One trace row. Timestamps are microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// Unique id of this exchange; the deduplication key in ClickHouse.
    pub trace_id: Uuid,
    /// Id of the client connection the exchange arrived on.
    pub connection_id: u64,
    /// When the request started (µs since epoch).
    pub start_time: i64,
    /// When the first response byte arrived (µs since epoch); `None` if none did.
    pub first_byte_time: Option<i64>,
    /// When the exchange ended (µs since epoch).
    pub end_time: i64,
    /// Host name of the machine the agent runs on.
    pub host: String,
    /// Process id of the calling process.
    pub pid: u32,
    /// User id of the calling process.
    pub uid: u32,
    /// Kernel command name (`comm`) of the calling process.
    pub comm: String,
    /// Executable path of the calling process.
    pub exe: String,
    /// Command line of the calling process (bounded).
    pub cmdline: String,
    /// Container id derived from the cgroup path; empty outside containers.
    pub container_id: String,
    /// Kubernetes pod UID derived from the cgroup path; empty outside pods.
    pub pod_uid: String,
    /// Original destination address the application connected to.
    pub dst_addr: IpAddr,
    /// Original destination port.
    pub dst_port: u16,
    /// TLS server name from the ClientHello.
    pub sni: String,
    /// Negotiated ALPN protocol (`h2`, `http/1.1`, or empty).
    pub alpn: String,
    /// HTTP version of the exchange (`HTTP/1.1`, `HTTP/2`).
    pub http_version: String,
    /// HTTP request method.
    pub method: String,
    /// Request path (without query secrets).
    pub path: String,
    /// Response status; `None` if no response was received.
    pub status: Option<u16>,
    /// Detected provider (`openai`, `anthropic`, ...).
    pub provider: String,
    /// API kind (`chat`, `responses`, `messages`, `embeddings`, ...).
    pub api: String,
    /// Model requested by the client.
    pub model: String,
    /// Model reported by the provider in the response.
    pub response_model: String,
    /// Whether the response was streamed.
    pub stream: bool,
    /// Time to first token in milliseconds, when known.
    pub ttft_ms: Option<f64>,
    /// Total duration in milliseconds.
    pub duration_ms: f64,
    /// Token kinds (`input`, `output`, `cached`, `reasoning`, ...), parallel to `token_counts`.
    pub token_kinds: Vec<String>,
    /// Token counts, parallel to `token_kinds`.
    pub token_counts: Vec<u64>,
    /// Input tokens, when the provider reported usage.
    pub input_tokens: Option<u64>,
    /// Output tokens, when the provider reported usage.
    pub output_tokens: Option<u64>,
    /// Cost in US dollars; `None` means unknown, which is not zero.
    pub cost_usd: Option<f64>,
    /// Request body (bounded, after redaction).
    pub request_body: String,
    /// Response body (bounded, after redaction).
    pub response_body: String,
    /// Request body bytes seen.
    pub request_bytes: u64,
    /// Response body bytes seen.
    pub response_bytes: u64,
    /// Request body bytes not kept because of the capture bound.
    pub request_dropped_bytes: u64,
    /// Response body bytes not kept because of the capture bound.
    pub response_dropped_bytes: u64,
    /// Tool calls the model made.
    pub tool_calls: Vec<ToolCall>,
    /// Security findings.
    pub findings: Vec<Finding>,
    /// Enforcement action taken (`allow`, `flag`, `block`).
    pub action: String,
    /// False when any part of the exchange was not captured.
    pub capture_complete: bool,
    /// Fingerprint of the API key used; never the key itself.
    pub api_key_fingerprint: String,
    /// Error that ended the exchange, if any.
    pub error: Option<String>,
    /// Whether TLS was intercepted (false: bytes were spliced through).
    pub intercepted: bool,
    /// Why the connection was not intercepted; empty when it was.
    pub not_intercepted_reason: String,
}

/// One tool call made by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Provider-assigned call id.
    pub id: String,
    /// Tool (function) name.
    pub name: String,
    /// Arguments as sent by the model (JSON text, bounded).
    pub arguments: String,
}

/// One security finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Finding kind (`prompt_injection`, `secret`, `pii`, ...).
    pub kind: String,
    /// Severity (`low`, `medium`, `high`, `critical`).
    pub severity: String,
    /// Confidence in `[0, 1]`.
    pub confidence: f32,
    /// Where it was found (`request.messages[2]`, `response`, ...).
    pub location: String,
    /// Short redacted excerpt.
    pub excerpt: String,
}

impl TraceRow {
    /// A row with the given id and times and every other field empty.
    pub fn new(trace_id: Uuid, start_time: i64, end_time: i64) -> Self {
        Self {
            trace_id,
            connection_id: 0,
            start_time,
            first_byte_time: None,
            end_time,
            host: String::new(),
            pid: 0,
            uid: 0,
            comm: String::new(),
            exe: String::new(),
            cmdline: String::new(),
            container_id: String::new(),
            pod_uid: String::new(),
            dst_addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            dst_port: 0,
            sni: String::new(),
            alpn: String::new(),
            http_version: String::new(),
            method: String::new(),
            path: String::new(),
            status: None,
            provider: String::new(),
            api: String::new(),
            model: String::new(),
            response_model: String::new(),
            stream: false,
            ttft_ms: None,
            duration_ms: 0.0,
            token_kinds: Vec::new(),
            token_counts: Vec::new(),
            input_tokens: None,
            output_tokens: None,
            cost_usd: None,
            request_body: String::new(),
            response_body: String::new(),
            request_bytes: 0,
            response_bytes: 0,
            request_dropped_bytes: 0,
            response_dropped_bytes: 0,
            tool_calls: Vec::new(),
            findings: Vec::new(),
            action: String::new(),
            capture_complete: true,
            api_key_fingerprint: String::new(),
            error: None,
            intercepted: true,
            not_intercepted_reason: String::new(),
        }
    }

    /// Adds a token count of `kind`, keeping the parallel arrays aligned.
    pub fn push_tokens(&mut self, kind: impl Into<String>, count: u64) {
        self.token_kinds.push(kind.into());
        self.token_counts.push(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_binding_field_names() {
        let mut row = TraceRow::new(Uuid::nil(), 1, 2);
        row.findings.push(Finding {
            kind: "secret".into(),
            severity: "high".into(),
            confidence: 0.5,
            location: "request".into(),
            excerpt: "sk-…".into(),
        });
        let v = serde_json::to_value(&row).unwrap();
        for key in [
            "trace_id",
            "start_time",
            "host",
            "pid",
            "comm",
            "exe",
            "sni",
            "dst_addr",
            "method",
            "path",
            "status",
            "provider",
            "api",
            "model",
            "stream",
            "ttft_ms",
            "duration_ms",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "findings",
            "action",
            "capture_complete",
            "error",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["findings"][0]["kind"], "secret");
        assert_eq!(v["findings"][0]["severity"], "high");
        assert!(v["cost_usd"].is_null());
    }
}
