//! The LLM analysis on the data path: OpenAI- and Anthropic-shaped exchanges through the real
//! proxy become complete trace rows, and the policy flags, blocks or redacts inline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmtrace_agent::{
    analysis::{Action, PolicyRule},
    config::ProxyConfig,
    llm::LlmConfig,
    proxy::{record::ExchangeRecord, row::trace_row},
    sink::TraceRow,
    trace::Fleet,
};
use serde_json::{Value, json};

use crate::support::{
    BAD_NAME, NAME, World, client,
    llm::{AFTER_STOP, AWS_KEY, RESPONSE_MODEL},
};

struct Reply {
    status: u16,
    content_type: String,
    body: Bytes,
}

/// POSTs `body` to `path` through the proxy (HTTP/2 when `h2`).
async fn post(w: &World, path: &str, body: &Value, h2: bool) -> Reply {
    post_to(w, NAME, path, body, h2).await
}

/// POSTs `body` to `path` through the proxy as server name `name`.
async fn post_to(w: &World, name: &str, path: &str, body: &Value, h2: bool) -> Reply {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let tls = client::connect(w.proxy_addr, name, client::config(&w.llmtrace_ca_pem, alpn))
        .await
        .unwrap();
    let io = TokioIo::new(tls);
    let bytes = Bytes::from(body.to_string());
    let uri = if h2 {
        format!("https://{name}{path}")
    } else {
        path.to_owned()
    };
    let mut req = Request::post(uri)
        .header("host", name)
        .header("content-type", "application/json")
        .header("content-length", bytes.len())
        .header("authorization", "Bearer sk-test-secret-key-0123456789");
    if path == "/v1/messages" {
        req = req.header("anthropic-version", "2023-06-01");
    }
    let req = req.body(Full::new(bytes)).unwrap();
    let resp = if h2 {
        let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    } else {
        let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        s.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        body,
    }
}

async fn next_record(w: &mut World) -> ExchangeRecord {
    tokio::time::timeout(Duration::from_secs(10), w.records.recv())
        .await
        .expect("no exchange record within 10 s")
        .expect("record channel closed")
}

async fn next_row(w: &mut World) -> TraceRow {
    let r = next_record(w).await;
    trace_row(r, &Fleet::default())
}

fn chat(content: &str, stream: bool) -> Value {
    let mut v = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": content}]});
    if stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    v
}

fn policy(action: Action) -> LlmConfig {
    let mut cfg = LlmConfig::default();
    cfg.analysis.policy.rules.push(PolicyRule {
        selector: llmtrace_agent::control::Selector::default(),
        kind: Some("secret".into()),
        min_severity: None,
        location: None,
        action,
    });
    cfg
}

fn tokens(row: &TraceRow) -> Vec<(String, u64)> {
    row.token_kinds
        .iter()
        .cloned()
        .zip(row.token_counts.iter().copied())
        .collect()
}

/// 12 input and 5 output tokens of gpt-4o-mini ($0.15 / $0.60 per 1M).
const COST: f64 = (12.0 * 0.15 + 5.0 * 0.6) / 1_000_000.0;

fn assert_hello_row(row: &TraceRow, stream: bool) {
    assert_eq!(row.status, Some(200));
    assert_eq!(
        row.provider, "test",
        "unknown provider → the provider-list name"
    );
    assert_eq!(row.api, "chat_completions");
    assert_eq!(row.model, "gpt-4o-mini");
    assert_eq!(row.response_model, RESPONSE_MODEL);
    assert_eq!(row.stream, stream);
    assert_eq!((row.input_tokens, row.output_tokens), (Some(12), Some(5)));
    assert!(tokens(row).contains(&("input".into(), 12)));
    assert!(tokens(row).contains(&("output".into(), 5)));
    let cost = row.cost_usd.expect("gpt-4o-mini has a price");
    assert!((cost - COST).abs() < 1e-12, "cost {cost}");
    assert_eq!(row.response_body, "Hello there");
    assert!(
        row.request_body.contains("Be brief."),
        "{}",
        row.request_body
    );
    assert!(
        row.request_body.contains("Say hello"),
        "{}",
        row.request_body
    );
    assert_eq!(row.action, "allow");
    assert!(row.findings.is_empty(), "{:?}", row.findings);
    assert!(row.capture_complete);
    assert_eq!(row.request_dropped_bytes, 0);
    assert!(!row.api_key_fingerprint.is_empty());
    let json = serde_json::to_string(row).unwrap();
    assert!(
        !json.contains("sk-test-secret-key"),
        "raw API key stored: {json}"
    );
    assert!(row.error.is_none(), "{:?}", row.error);
}

#[tokio::test]
async fn chat_completion_plain_and_streamed() {
    let mut w = World::start().await;
    let r = post(&w, "/v1/chat/completions", &chat("Say hello", false), false).await;
    assert_eq!(r.status, 200);
    let row = next_row(&mut w).await;
    assert_hello_row(&row, false);
    assert!(row.ttft_ms.is_some());

    let r = post(&w, "/v1/chat/completions", &chat("Say hello", true), true).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("[DONE]"));
    let row = next_row(&mut w).await;
    assert_hello_row(&row, true);
    assert!(row.ttft_ms.unwrap() <= row.duration_ms);
    assert_eq!(w.metrics.llm_exchanges_for(Action::Allow), 2);
    let text = w.metrics_text();
    assert!(
        text.contains("llm_exchanges_total{action=\"allow\"} 2"),
        "{text}"
    );
    assert!(text.contains("llm_analysis_seconds_count 2"), "{text}");
}

#[tokio::test]
async fn tool_calls_plain_and_streamed() {
    let mut w = World::start().await;
    for stream in [false, true] {
        let r = post(
            &w,
            "/v1/chat/completions",
            &chat("TOOL weather?", stream),
            false,
        )
        .await;
        assert_eq!(r.status, 200);
        let row = next_row(&mut w).await;
        assert_eq!(row.tool_calls.len(), 1, "stream={stream}");
        let call = &row.tool_calls[0];
        assert_eq!(
            (call.id.as_str(), call.name.as_str()),
            ("call_1", "get_weather")
        );
        assert_eq!(call.arguments, r#"{"city":"Paris"}"#);
        assert_eq!((row.input_tokens, row.output_tokens), (Some(12), Some(5)));
        assert_eq!(row.stream, stream);
    }
}

#[tokio::test]
async fn anthropic_messages_streamed() {
    let mut w = World::start().await;
    let body = json!({"model": "claude-3-5-haiku-20241022", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "Say hello"}]});
    let r = post(&w, "/v1/messages", &body, false).await;
    assert_eq!(r.status, 200);
    let row = next_row(&mut w).await;
    assert_eq!((row.api.as_str(), row.stream), ("messages", true));
    assert_eq!(row.model, "claude-3-5-haiku-20241022");
    assert_eq!(row.response_body, "Hello there");
    assert_eq!((row.input_tokens, row.output_tokens), (Some(12), Some(5)));
    let cost = row.cost_usd.expect("claude-3-5-haiku has a price");
    assert!(
        (cost - (12.0 * 0.8 + 5.0 * 4.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
}

fn assert_key_masked(row: &TraceRow) {
    let json = serde_json::to_string(row).unwrap();
    assert!(!json.contains(AWS_KEY), "raw key stored: {json}");
    let f = row
        .findings
        .iter()
        .find(|f| f.kind == "secret.aws_access_key")
        .unwrap_or_else(|| panic!("no AWS key finding: {:?}", row.findings));
    assert_eq!(f.location, "request");
    assert!(f.excerpt.contains("AKIA****"), "{}", f.excerpt);
}

#[tokio::test]
async fn a_secret_in_the_prompt_is_flagged_by_default() {
    let mut w = World::start().await;
    let prompt = format!("deploy with {AWS_KEY} please");
    let r = post(&w, "/v1/chat/completions", &chat(&prompt, false), false).await;
    assert_eq!(r.status, 200);
    let row = next_row(&mut w).await;
    assert_eq!(row.action, "flag");
    assert_key_masked(&row);
    assert!(
        row.request_body.contains("deploy with [REDACTED"),
        "{}",
        row.request_body
    );
    let seen = w.upstream.seen.all();
    assert!(
        String::from_utf8_lossy(&seen[0].1).contains(AWS_KEY),
        "flag forwards the request untouched"
    );
    assert!(
        w.metrics_text()
            .contains("llm_findings_total{kind=\"secret.aws_access_key\"} 1")
    );
}

#[tokio::test]
async fn block_answers_in_the_provider_shape_without_contacting_it() {
    let mut w = World::with_llm(ProxyConfig::default(), policy(Action::Block)).await;
    let prompt = format!("deploy with {AWS_KEY} please");
    let r = post(&w, "/v1/chat/completions", &chat(&prompt, false), false).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.content_type, "application/json");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "llmtrace_blocked");
    assert!(!String::from_utf8_lossy(&r.body).contains(AWS_KEY));
    assert!(
        w.upstream.seen.all().is_empty(),
        "the provider saw the request"
    );
    let row = next_row(&mut w).await;
    assert_eq!((row.action.as_str(), row.status), ("block", Some(403)));
    assert!(row.error.is_none(), "{:?}", row.error);
    assert_key_masked(&row);
    assert_eq!(w.metrics.llm_exchanges_for(Action::Block), 1);

    let body = json!({"model": "claude-3-5-haiku-20241022", "max_tokens": 64,
                      "messages": [{"role": "user", "content": prompt}]});
    let r = post(&w, "/v1/messages", &body, true).await;
    assert_eq!(r.status, 403);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (&v["type"], &v["error"]["type"]),
        (&json!("error"), &json!("permission_error"))
    );
    assert!(
        w.upstream.seen.all().is_empty(),
        "the provider saw the request"
    );
    assert_eq!(next_row(&mut w).await.action, "block");
}

#[tokio::test]
async fn redact_forwards_the_masked_body() {
    let mut w = World::with_llm(ProxyConfig::default(), policy(Action::Redact)).await;
    let prompt = format!("deploy with {AWS_KEY} please");
    for h2 in [false, true] {
        let r = post(&w, "/v1/chat/completions", &chat(&prompt, false), h2).await;
        assert_eq!(r.status, 200);
        let row = next_row(&mut w).await;
        assert_eq!(row.action, "redact");
        assert_key_masked(&row);
    }
    let seen = w.upstream.seen.all();
    assert_eq!(seen.len(), 2);
    for (_, body) in seen {
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(AWS_KEY), "the provider got the key: {text}");
        let v: Value = serde_json::from_slice(&body).expect("redacted body is valid JSON");
        assert_eq!(v["model"], "gpt-4o-mini");
        assert!(
            v["messages"][1]["content"]
                .as_str()
                .unwrap()
                .contains("please")
        );
    }
}

#[tokio::test]
async fn a_streamed_secret_stops_the_stream_under_block() {
    let mut w = World::with_llm(ProxyConfig::default(), policy(Action::Block)).await;
    for h2 in [false, true] {
        let r = post(&w, "/v1/chat/completions", &chat("LEAK it", true), h2).await;
        assert_eq!(r.status, 200);
        let text = String::from_utf8_lossy(&r.body);
        assert!(text.contains("llmtrace_blocked"), "no stop event: {text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert!(!text.contains(AFTER_STOP), "the stream went on: {text}");
        let row = next_row(&mut w).await;
        assert_eq!(row.action, "block");
        assert!(row.error.is_none(), "{:?}", row.error);
        let json = serde_json::to_string(&row).unwrap();
        assert!(!json.contains(AWS_KEY), "raw key stored: {json}");
        assert!(
            row.findings
                .iter()
                .any(|f| f.kind == "secret.aws_access_key" && f.location == "response")
        );
    }
    assert_eq!(w.metrics.llm_early_stops.get(), 2);
}

#[tokio::test]
async fn a_non_llm_path_on_a_provider_host_still_gets_a_metadata_row() {
    let mut w = World::start().await;
    let r = post(&w, "/echo", &json!({"hello": AWS_KEY}), false).await;
    assert_eq!(r.status, 200);
    let record = next_record(&mut w).await;
    assert!(record.llm.is_none());
    let row = trace_row(record, &Fleet::default());
    assert_eq!((row.path.as_str(), row.status), ("/echo", Some(200)));
    assert_eq!(row.provider, "test");
    assert!(row.api.is_empty() && row.action.is_empty());
    assert!(row.request_body.is_empty(), "non-LLM bodies are not stored");
    assert!(!row.capture_complete);
}

#[tokio::test]
async fn a_body_beyond_the_bound_goes_upstream_whole_and_unredacted() {
    let mut cfg = policy(Action::Redact);
    cfg.max_document_bytes = 256;
    let mut w = World::with_llm(ProxyConfig::default(), cfg).await;
    // Far more than one read: the bound cuts it (a body that arrives in one read is whole).
    let prompt = format!("deploy with {AWS_KEY} please {}", "x".repeat(1 << 20));
    let body = chat(&prompt, false);
    for h2 in [false, true] {
        let r = post(&w, "/v1/chat/completions", &body, h2).await;
        assert_eq!(r.status, 200);
        let row = next_row(&mut w).await;
        assert_eq!(row.action, "flag", "a cut body cannot be redacted");
        assert!(!row.capture_complete);
        assert!(
            row.request_dropped_bytes > 900_000,
            "{}",
            row.request_dropped_bytes
        );
        assert!(
            row.error
                .as_deref()
                .unwrap()
                .contains("redaction not applied")
        );
        assert!(!serde_json::to_string(&row).unwrap().contains(AWS_KEY));
    }
    for (_, seen) in w.upstream.seen.all() {
        assert_eq!(
            seen,
            body.to_string().as_bytes(),
            "the provider got it unchanged"
        );
    }
}

#[tokio::test]
async fn a_failed_exchange_still_gets_its_analysis() {
    let mut w = World::start().await;
    let r = post_to(
        &w,
        BAD_NAME,
        "/v1/chat/completions",
        &chat("Say hello", false),
        false,
    )
    .await;
    assert_eq!(r.status, 502);
    let row = next_row(&mut w).await;
    assert_eq!(row.status, Some(502));
    assert!(row.error.is_some());
    assert_eq!(
        (row.api.as_str(), row.model.as_str()),
        ("chat_completions", "gpt-4o-mini")
    );
    assert!(row.request_body.contains("Say hello"));
    assert_eq!(
        (row.input_tokens, row.cost_usd),
        (None, None),
        "nothing was answered"
    );
    assert_eq!(
        w.metrics.llm_exchanges_for(Action::Allow),
        1,
        "finished exactly once"
    );
}
