//! A realistic, fully populated trace row for tests and benchmarks.

use std::net::{IpAddr, Ipv4Addr};

use uuid::Uuid;

use super::row::{Finding, ToolCall, TraceRow};
use crate::identity::ContainerRuntime;

/// A fully populated, realistic row (≈ 2 KB encoded) for tests and
/// benchmarks; `n` selects the trace id and varies a few fields.
pub fn sample_row(n: u64) -> TraceRow {
    let start = 1_764_000_000_000_000 + i64::try_from(n % 1_000_000_000).unwrap_or(0) * 1_000;
    let mut row = TraceRow::new(
        Uuid::from_u64_pair(0x6c6c_6d74_7261_6365, n),
        start,
        start + 1_234_567,
    );
    row.connection_id = n / 3;
    row.first_byte_time = Some(start + 345_678);
    row.host = "node-7.example.internal".into();
    row.pid = 4242 + (n % 7) as u32;
    row.uid = 1000;
    row.comm = "python3".into();
    row.exe = "/usr/bin/python3.11".into();
    row.cmdline = "python3 -m agent_app --workers 4 --config /etc/app/config.yaml".into();
    row.container_id = "3f4e0c1d2b7a9e8f6c5d4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e".into();
    row.dst_addr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    row.dst_port = 443;
    row.sni = "api.openai.com".into();
    row.alpn = "h2".into();
    row.http_version = "HTTP/2".into();
    row.method = "POST".into();
    row.path = "/v1/chat/completions".into();
    row.status = Some(200);
    row.provider = "openai".into();
    row.api = "chat".into();
    row.model = "gpt-4o-mini".into();
    row.response_model = "gpt-4o-mini-2024-07-18".into();
    row.stream = n.is_multiple_of(2);
    row.ttft_ms = Some(345.678);
    row.duration_ms = 1234.567;
    row.push_tokens("input", 812 + n % 100);
    row.push_tokens("output", 256);
    row.push_tokens("cached", 512);
    row.input_tokens = Some(812 + n % 100);
    row.output_tokens = Some(256);
    row.cost_usd = Some(0.000_275_4);
    row.request_body = format!(
        r#"{{"model":"gpt-4o-mini","stream":true,"messages":[{{"role":"system","content":"You are a careful assistant for trace {n}. {}"}},{{"role":"user","content":"Summarise the incident report and list follow-ups."}}]}}"#,
        "Answer briefly and cite sources. ".repeat(12)
    );
    row.response_body = format!(
        r#"{{"id":"chatcmpl-{n}","object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}]}}"#,
        "The incident was caused by an expired certificate; rotate it and add monitoring. "
            .repeat(9)
    );
    row.request_bytes = row.request_body.len() as u64;
    row.response_bytes = row.response_body.len() as u64 + 17;
    row.response_dropped_bytes = 17;
    row.tool_calls.push(ToolCall {
        id: format!("call_{n}"),
        name: "search_tickets".into(),
        arguments: r#"{"query":"certificate expiry","limit":5}"#.into(),
    });
    row.findings.push(Finding {
        kind: "secret".into(),
        severity: "high".into(),
        confidence: 0.93,
        location: "request.messages[1]".into(),
        excerpt: "AKIA…MPLE".into(),
    });
    row.findings.push(Finding {
        kind: "prompt_injection".into(),
        severity: "medium".into(),
        confidence: 0.61,
        location: "response".into(),
        excerpt: "ignore previous…".into(),
    });
    row.action = "flag".into();
    row.capture_complete = false;
    row.api_key_fingerprint = "sha256:9f2c4e1ab37d".into();
    row.error = Some("upstream reset after 1024 bytes".into());
    row.intercepted = true;
    row.not_intercepted_reason = String::new();
    row.exchange_seq = u32::try_from(n % 5).unwrap_or(0) + 1;
    row.upstream_alpn = "h2".into();
    row.request_id = format!("req_{n:08x}");
    row.finish_reason = "stop".into();
    row.max_tokens = Some(1024);
    row.temperature = Some(0.2);
    row.usage_estimated = n.is_multiple_of(3);
    row.analysis_truncated = n.is_multiple_of(5);
    row.first_body_byte_ms = Some(340.5);
    row.inter_chunk_p50_ms = Some(12.25);
    row.inter_chunk_max_ms = Some(180.0);
    row.response_chunks = 57;
    row.container_runtime = ContainerRuntime::Containerd;
    row.k8s_pod_uid = "0d6a2f7e-91c4-4b2d-8a3e-5c1b9d7f2e40".into();
    row.k8s_namespace = "team-search".into();
    row.k8s_pod = "agent-app-6f9c7d-x2k4p".into();
    row.k8s_container = "app".into();
    row.k8s_workload_kind = "Deployment".into();
    row.k8s_workload = "agent-app".into();
    row.node = "node-7".into();
    row.netns = 4_026_532_201;
    row.agent_version = env!("CARGO_PKG_VERSION").into();
    row.cluster = "prod-eu".into();
    row.tools_offered = vec!["search_tickets".into(), "run_shell".into()];
    row.parse_errors = u32::from(n.is_multiple_of(4));
    row
}
