//! Recorded-shape fixtures for every provider and API kind, streamed and not, driven through the
//! public exchange API with every two-way split of the response body and with one-byte chunks.

// Test code: short names for the exchange under test and its parts read best here.
#![allow(
    clippy::many_single_char_names,
    clippy::format_push_string,
    clippy::float_cmp
)]

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use super::{Engine, Exchange, ExchangeAnalysis, LlmConfig, RequestHead};
use crate::analysis::Action;

static ENGINE: LazyLock<Arc<Engine>> = LazyLock::new(|| {
    let mut c = LlmConfig::default();
    // No time bound: an unoptimised test build under a parallel test run can exceed it, and
    // an exchange cut short by time differs between chunkings.
    c.analysis.max_analysis_ms = 0;
    Engine::new(c, b"test-key")
});

const SSE: &str = "text/event-stream; charset=utf-8";
const JSON: &str = "application/json";

struct Case {
    name: &'static str,
    host: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    request: &'static [u8],
    content_type: &'static str,
    response_headers: &'static [(&'static str, &'static str)],
    response: &'static [u8],
}

struct Expect {
    provider: &'static str,
    api: &'static str,
    model: Option<&'static str>,
    response_model: Option<&'static str>,
    stream: bool,
    text: &'static str,
    tools: &'static [(&'static str, &'static str)],
    finish: Option<&'static str>,
    /// input, output, cached, reasoning
    tokens: (Option<u64>, Option<u64>, Option<u64>, Option<u64>),
    estimated: bool,
    request_id: Option<&'static str>,
}

macro_rules! fx {
    ($f:literal) => {
        include_bytes!(concat!("fixtures/", $f))
    };
}

fn run(case: &Case, chunks: &[&[u8]]) -> ExchangeAnalysis {
    let t0 = Instant::now();
    let headers = [
        ("content-type", JSON),
        ("authorization", "Bearer sk-test-fixture"),
    ];
    let head = RequestHead {
        method: "POST",
        host: case.host,
        path: case.path,
        query: case.query,
        headers: &headers,
    };
    let mut ex = Exchange::start(&ENGINE, &head, t0).expect("LLM endpoint");
    let verdict = ex.request_body(case.request, true);
    assert!(verdict.block.is_none());
    let mut rh = vec![("content-type", case.content_type)];
    rh.extend_from_slice(case.response_headers);
    ex.response_head(200, rh.as_slice());
    let mut at = t0;
    for c in chunks {
        at += Duration::from_millis(10);
        assert!(ex.response_chunk(c, at).is_none());
    }
    ex.finish()
}

/// The analysis without the fields that depend on chunking.
fn semantic(mut a: ExchangeAnalysis) -> ExchangeAnalysis {
    a.ttft_ms = None;
    a.first_byte_ms = None;
    a.inter_chunk_p50_ms = None;
    a.inter_chunk_max_ms = None;
    a.chunks = 0;
    // When the terminal event arrived depends on the chunking; that it did, does not.
    a.progress.terminal_ms = a.progress.terminal_ms.map(|_| 0.0);
    a
}

fn check(case: &Case, e: &Expect) {
    let whole = run(case, &[case.response]);
    let a = &whole;
    assert_eq!(
        (a.provider.as_str(), a.api.as_str()),
        (e.provider, e.api),
        "{}",
        case.name
    );
    assert_eq!(a.model.as_deref(), e.model, "{}", case.name);
    assert_eq!(
        a.response_model.as_deref(),
        e.response_model,
        "{}",
        case.name
    );
    assert_eq!(a.stream, e.stream, "{}", case.name);
    assert_eq!(a.response_text, e.text, "{}", case.name);
    let tools: Vec<(&str, &str)> = a
        .tool_calls
        .iter()
        .map(|t| (t.name.as_str(), t.arguments.as_str()))
        .collect();
    assert_eq!(tools, e.tools, "{}", case.name);
    assert_eq!(a.finish_reason.as_deref(), e.finish, "{}", case.name);
    let u = &a.usage;
    assert_eq!(
        (u.input, u.output, u.cached_input, u.reasoning),
        e.tokens,
        "{}",
        case.name
    );
    assert_eq!(a.usage_estimated, e.estimated, "{}", case.name);
    assert_eq!(a.request_id.as_deref(), e.request_id, "{}", case.name);
    assert_eq!(a.parse_errors, 0, "{}", case.name);
    assert!(a.error.is_none(), "{}: {:?}", case.name, a.error);
    assert!(a.progress.reached_terminal(), "{}", case.name);
    assert!(
        a.api_key_fingerprint
            .as_ref()
            .is_some_and(|f| f.len() == 16)
    );
    let expected = semantic(whole.clone());
    for i in 0..=case.response.len() {
        let (x, y) = case.response.split_at(i);
        assert_eq!(
            semantic(run(case, &[x, y])),
            expected,
            "{} split at {i}",
            case.name
        );
    }
    let bytes: Vec<&[u8]> = case.response.chunks(1).collect();
    assert_eq!(
        semantic(run(case, &bytes)),
        expected,
        "{} byte by byte",
        case.name
    );
}

fn openai(
    name: &'static str,
    path: &'static str,
    request: &'static [u8],
    ct: &'static str,
    response: &'static [u8],
) -> Case {
    Case {
        name,
        host: "api.openai.com",
        path,
        query: None,
        request,
        content_type: ct,
        response_headers: &[],
        response,
    }
}

#[test]
fn openai_chat_non_streaming_with_tool_call() {
    let mut case = openai(
        "chat",
        "/v1/chat/completions",
        fx!("openai_chat_request.json"),
        JSON,
        fx!("openai_chat_response.json"),
    );
    case.response_headers = &[("x-request-id", "req_7f3a9c")];
    check(
        &case,
        &Expect {
            provider: "openai",
            api: "chat_completions",
            model: Some("gpt-4o-mini"),
            response_model: Some("gpt-4o-mini-2024-07-18"),
            stream: false,
            text: "",
            tools: &[("get_weather", "{\"city\":\"Paris\"}")],
            finish: Some("tool_calls"),
            tokens: (Some(82), Some(17), Some(0), Some(0)),
            estimated: false,
            request_id: Some("req_7f3a9c"),
        },
    );
    let a = run(&case, &[case.response]);
    assert!((a.cost_usd.unwrap() - (82.0 * 0.15 + 17.0 * 0.6) / 1e6).abs() < 1e-12);
    assert_eq!(a.temperature, Some(0.7));
    assert_eq!(a.max_tokens, Some(256));
    assert_eq!(a.tools, vec!["get_weather"]);
    // The fake AWS key in the prompt is found, and masked in everything kept.
    assert_eq!(a.findings[0].kind, "secret.aws_access_key");
    assert_eq!(a.action, Action::Flag);
    let json = serde_json::to_string(&a).unwrap();
    assert!(
        !json.contains("AKIAIOSFODNN7EXAMPLE") && !json.contains("sk-test-fixture"),
        "{json}"
    );
    assert!(a.prompt.contains("[REDACTED:secret.aws_access_key]"));
}

#[test]
fn openai_chat_stream_with_usage_and_parallel_tools() {
    let case = openai(
        "chat stream",
        "/v1/chat/completions",
        fx!("openai_chat_stream_request.json"),
        SSE,
        fx!("openai_chat_stream.sse"),
    );
    check(
        &case,
        &Expect {
            provider: "openai",
            api: "chat_completions",
            model: Some("gpt-4o"),
            response_model: Some("gpt-4o-2024-08-06"),
            stream: true,
            text: "Hello! Checking now.",
            tools: &[
                ("get_time", "{\"city\": \"Tokyo\"}"),
                ("get_time", "{\"city\": \"Paris\"}"),
            ],
            finish: Some("tool_calls"),
            tokens: (Some(61), Some(45), Some(32), Some(0)),
            estimated: false,
            request_id: Some("chatcmpl-AbC123"),
        },
    );
    let a = run(&case, &[case.response]);
    assert!((a.cost_usd.unwrap() - (29.0 * 2.5 + 32.0 * 1.25 + 45.0 * 10.0) / 1e6).abs() < 1e-12);
    assert_eq!(a.tool_calls[0].id.as_deref(), Some("call_tokyo01"));
}

#[test]
fn openai_chat_stream_without_usage_is_estimated() {
    let case = openai(
        "no usage",
        "/v1/chat/completions",
        fx!("openai_chat_stream_nousage_request.json"),
        SSE,
        fx!("openai_chat_stream_nousage.sse"),
    );
    check(
        &case,
        &Expect {
            provider: "openai",
            api: "chat_completions",
            model: Some("gpt-4o-mini"),
            response_model: Some("gpt-4o-mini-2024-07-18"),
            stream: true,
            text: "One, two, three.",
            tools: &[],
            finish: Some("stop"),
            tokens: (Some(6), Some(4), None, None),
            estimated: true,
            request_id: Some("chatcmpl-Nu1"),
        },
    );
}

#[test]
fn openai_responses_whole_and_streamed() {
    let case = openai(
        "responses",
        "/v1/responses",
        fx!("openai_responses_request.json"),
        JSON,
        fx!("openai_responses_response.json"),
    );
    check(
        &case,
        &Expect {
            provider: "openai",
            api: "responses",
            model: Some("gpt-4.1"),
            response_model: Some("gpt-4.1-2025-04-14"),
            stream: false,
            text: "Paris.",
            tools: &[],
            finish: Some("completed"),
            tokens: (Some(24), Some(3), Some(0), Some(0)),
            estimated: false,
            request_id: Some("resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"),
        },
    );
    assert_eq!(
        run(&case, &[case.response]).prompt,
        "system: Answer tersely.\nuser: Capital of France?"
    );
    let case = openai(
        "responses stream",
        "/v1/responses",
        fx!("openai_responses_stream_request.json"),
        SSE,
        fx!("openai_responses_stream.sse"),
    );
    check(
        &case,
        &Expect {
            provider: "openai",
            api: "responses",
            model: Some("o4-mini"),
            response_model: Some("o4-mini-2025-04-16"),
            stream: true,
            text: "Let me check.",
            tools: &[("stat_file", "{\"path\":\"report.pdf\"}")],
            finish: Some("completed"),
            tokens: (Some(58), Some(87), Some(0), Some(64)),
            estimated: false,
            request_id: Some("resp_stream01"),
        },
    );
}

#[test]
fn openai_embeddings_and_legacy_completions() {
    let case = openai(
        "embeddings",
        "/v1/embeddings",
        fx!("openai_embeddings_request.json"),
        JSON,
        fx!("openai_embeddings_response.json"),
    );
    check(
        &case,
        &Expect {
            provider: "openai",
            api: "embeddings",
            model: Some("text-embedding-3-small"),
            response_model: Some("text-embedding-3-small"),
            stream: false,
            text: "",
            tools: &[],
            finish: None,
            tokens: (Some(11), None, None, None),
            estimated: false,
            request_id: None,
        },
    );
    assert!((run(&case, &[case.response]).cost_usd.unwrap() - 11.0 * 0.02 / 1e6).abs() < 1e-15);
    let case = openai(
        "completions",
        "/v1/completions",
        fx!("openai_completions_request.json"),
        JSON,
        fx!("openai_completions_response.json"),
    );
    check(
        &case,
        &Expect {
            provider: "openai",
            api: "completions",
            model: Some("gpt-3.5-turbo-instruct"),
            response_model: Some("gpt-3.5-turbo-instruct"),
            stream: false,
            text: "\n\nThis is indeed a test",
            tools: &[],
            finish: Some("length"),
            tokens: (Some(5), Some(7), None, None),
            estimated: false,
            request_id: Some("cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7"),
        },
    );
    let case = openai(
        "completions stream",
        "/v1/completions",
        fx!("openai_completions_stream_request.json"),
        SSE,
        fx!("openai_completions_stream.sse"),
    );
    check(
        &case,
        &Expect {
            provider: "openai",
            api: "completions",
            model: Some("gpt-3.5-turbo-instruct"),
            response_model: Some("gpt-3.5-turbo-instruct"),
            stream: true,
            text: "This is a test",
            tools: &[],
            finish: Some("length"),
            tokens: (Some(6), Some(4), None, None),
            estimated: true,
            request_id: Some("cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe"),
        },
    );
}

#[test]
fn anthropic_messages_whole_with_risky_tool() {
    let case = Case {
        name: "anthropic",
        host: "api.anthropic.com",
        path: "/v1/messages",
        query: None,
        request: fx!("anthropic_request.json"),
        content_type: JSON,
        response_headers: &[("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")],
        response: fx!("anthropic_response.json"),
    };
    check(
        &case,
        &Expect {
            provider: "anthropic",
            api: "messages",
            model: Some("claude-sonnet-4-5"),
            response_model: Some("claude-sonnet-4-5-20250929"),
            stream: false,
            text: "I'll clean the temporary directory.",
            tools: &[("bash", "{\"command\":\"rm -rf /tmp/cache\"}")],
            finish: Some("tool_use"),
            tokens: (Some(1436), Some(58), Some(1024), None),
            estimated: false,
            request_id: Some("req_011CSHoEeqs5C35K2UUqR7Fy"),
        },
    );
    let a = run(&case, &[case.response]);
    assert!((a.cost_usd.unwrap() - (412.0 * 3.0 + 1024.0 * 0.3 + 58.0 * 15.0) / 1e6).abs() < 1e-12);
    let shell = a
        .findings
        .iter()
        .find(|f| f.kind == "tool.shell")
        .expect("risky tool flagged");
    assert_eq!(shell.severity, crate::analysis::Severity::Critical);
    assert_eq!(
        a.prompt,
        "system: You are a careful shell assistant.\nuser: Free up disk space in /tmp"
    );
}

#[test]
fn anthropic_stream_with_thinking_and_tool_use() {
    let case = Case {
        name: "anthropic stream",
        host: "api.anthropic.com",
        path: "/v1/messages",
        query: None,
        request: fx!("anthropic_stream_request.json"),
        content_type: SSE,
        response_headers: &[],
        response: fx!("anthropic_stream.sse"),
    };
    check(
        &case,
        &Expect {
            provider: "anthropic",
            api: "messages",
            model: Some("claude-sonnet-4-5"),
            response_model: Some("claude-sonnet-4-5-20250929"),
            stream: true,
            text: "Okay, let's check the weather for San Francisco, CA:",
            tools: &[("get_weather", "{\"location\": \"San Francisco, CA\"}")],
            finish: Some("tool_use"),
            tokens: (Some(472), Some(89), Some(0), None),
            estimated: false,
            request_id: Some("msg_014p7gG3wDgGV9EUtLvnow3U"),
        },
    );
    let a = run(&case, &[case.response]);
    assert_eq!(
        a.tool_calls[0].id.as_deref(),
        Some("toolu_01T1x1fJ34qAmk2tNTrN7Up6")
    );
}

fn gemini(
    name: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    req: &'static [u8],
    ct: &'static str,
    resp: &'static [u8],
) -> Case {
    Case {
        name,
        host: "generativelanguage.googleapis.com",
        path,
        query,
        request: req,
        content_type: ct,
        response_headers: &[],
        response: resp,
    }
}

#[test]
fn gemini_whole_sse_and_json_array() {
    let case = gemini(
        "gemini",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        None,
        fx!("gemini_request.json"),
        JSON,
        fx!("gemini_response.json"),
    );
    check(
        &case,
        &Expect {
            provider: "gemini",
            api: "generate_content",
            model: Some("gemini-2.5-flash"),
            response_model: Some("gemini-2.5-flash"),
            stream: false,
            text: "AI learns patterns from data to make predictions or decisions.",
            tools: &[],
            finish: Some("STOP"),
            tokens: (Some(12), Some(41), None, Some(30)),
            estimated: false,
            request_id: Some("AbCdEfGhIjKlMnOp"),
        },
    );
    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent";
    let case = gemini(
        "gemini sse",
        path,
        Some("alt=sse"),
        fx!("gemini_stream_request.json"),
        SSE,
        fx!("gemini_stream.sse"),
    );
    check(
        &case,
        &Expect {
            provider: "gemini",
            api: "stream_generate_content",
            model: Some("gemini-2.0-flash"),
            response_model: Some("gemini-2.0-flash"),
            stream: true,
            text: "Silent code compiles,\nbytes flow like mountain streams,\nbugs sleep till morning.",
            tools: &[("search_flights", "{\"to\":\"Rome\"}")],
            finish: Some("STOP"),
            tokens: (Some(9), Some(23), Some(4), None),
            estimated: false,
            request_id: Some("gem-sse-1"),
        },
    );
    let case = gemini(
        "gemini array",
        path,
        None,
        fx!("gemini_stream_request.json"),
        JSON,
        fx!("gemini_stream_array.json"),
    );
    check(
        &case,
        &Expect {
            provider: "gemini",
            api: "stream_generate_content",
            model: Some("gemini-2.0-flash"),
            response_model: Some("gemini-2.0-flash"),
            stream: true,
            text: "Silent code compiles,\nbytes flow like \"mountain\" streams ]}",
            tools: &[],
            finish: Some("STOP"),
            tokens: (Some(9), Some(12), None, None),
            estimated: false,
            request_id: Some("gem-arr-1"),
        },
    );
}

#[test]
fn azure_stream_with_filter_results_and_compatible_providers() {
    let case = Case {
        name: "azure",
        host: "myres.openai.azure.com",
        path: "/openai/deployments/gpt4o-prod/chat/completions",
        query: Some("api-version=2024-10-21"),
        request: fx!("azure_chat_stream_request.json"),
        content_type: SSE,
        response_headers: &[("apim-request-id", "f0e1d2c3-0000-4b5a-9c8d-112233445566")],
        response: fx!("azure_chat_stream.sse"),
    };
    check(
        &case,
        &Expect {
            provider: "azure_openai",
            api: "chat_completions",
            model: Some("gpt4o-prod"),
            response_model: Some("gpt-4o-2024-11-20"),
            stream: true,
            text: "Hi there",
            tools: &[],
            finish: Some("stop"),
            tokens: (Some(8), Some(3), Some(0), Some(0)),
            estimated: false,
            request_id: Some("f0e1d2c3-0000-4b5a-9c8d-112233445566"),
        },
    );
    let a = run(&case, &[case.response]);
    assert!(a.cost_usd.is_some(), "priced by the returned model");
    for (host, provider) in [
        ("api.groq.com", "groq"),
        ("api.deepseek.com", "deepseek"),
        ("openrouter.ai", "openrouter"),
    ] {
        let case = Case {
            name: provider,
            host,
            ..openai(
                "compat",
                "/openai/v1/chat/completions",
                fx!("openai_chat_stream_request.json"),
                SSE,
                fx!("openai_chat_stream.sse"),
            )
        };
        let a = run(&case, &[case.response]);
        assert_eq!(
            (a.provider.as_str(), a.response_text.as_str()),
            (provider, "Hello! Checking now.")
        );
    }
}

#[test]
fn provider_error_in_stream_is_reported() {
    let case = Case {
        name: "anthropic error",
        host: "api.anthropic.com",
        path: "/v1/messages",
        query: None,
        request: fx!("anthropic_stream_request.json"),
        content_type: SSE,
        response_headers: &[],
        response: fx!("error_anthropic_stream.sse"),
    };
    let a = run(&case, &[case.response]);
    assert_eq!(a.error.as_deref(), Some("overloaded_error: Overloaded"));
    assert_eq!(
        a.response_model.as_deref(),
        Some("claude-haiku-4-5-20251001")
    );
}

#[test]
fn unknown_path_on_provider_host_keeps_metadata() {
    let t0 = Instant::now();
    let head = RequestHead {
        method: "GET",
        host: "api.openai.com",
        path: "/v1/models",
        query: None,
        headers: &[],
    };
    let mut ex = Exchange::start(&ENGINE, &head, t0).unwrap();
    ex.response_head(200, &[("content-type", JSON)]);
    ex.response_chunk(br#"{"object":"list","data":[{"id":"gpt-4o"}]}"#, t0);
    let a = ex.finish();
    assert_eq!(
        (a.provider.as_str(), a.api.as_str(), a.status),
        ("openai", "unknown", Some(200))
    );
    assert_eq!(a.cost_usd, None);
}

#[test]
fn gzip_response_is_decoded_for_analysis() {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(fx!("openai_chat_response.json")).unwrap();
    let gz: &'static [u8] = Vec::leak(e.finish().unwrap());
    let case = Case {
        response_headers: &[("content-encoding", "gzip")],
        ..openai(
            "gzip",
            "/v1/chat/completions",
            fx!("openai_chat_request.json"),
            JSON,
            gz,
        )
    };
    let a = run(&case, &gz.chunks(7).collect::<Vec<_>>());
    assert_eq!(a.usage.input, Some(82));
    assert_eq!(a.tool_calls.len(), 1);
}

/// Splits `case`'s response just before `marker` (the first occurrence, or the last one with
/// `last`), feeds the two parts as chunks arriving at 10 and 20 ms, and returns when the
/// analysis saw the terminal event: it must come with the second chunk, never the first.
fn terminal_arrival(case: &Case, marker: &str, last: bool) -> Option<f64> {
    let r = case.response;
    let m = marker.as_bytes();
    let mut at = r.windows(m.len()).enumerate().filter(|(_, w)| *w == m);
    let cut = if last { at.next_back() } else { at.next() }
        .unwrap_or_else(|| panic!("{}: no {marker}", case.name))
        .0;
    let before = run(case, &[&r[..cut]]);
    assert_eq!(before.progress.terminal_ms, None, "{}", case.name);
    // A JSON body's one document is not parsed until it closes.
    assert!(
        before.progress.events > 0 || case.name == "chat json",
        "{}",
        case.name
    );
    run(case, &[&r[..cut], &r[cut..]]).progress.terminal_ms
}

#[test]
fn every_provider_stream_ends_with_its_terminal_event() {
    let chat = |name, path, req, resp| openai(name, path, req, SSE, resp);
    let anthropic = |response| Case {
        name: "anthropic",
        host: "api.anthropic.com",
        path: "/v1/messages",
        query: None,
        request: fx!("anthropic_stream_request.json"),
        content_type: SSE,
        response_headers: &[],
        response,
    };
    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent";
    let req = fx!("gemini_stream_request.json");
    let cases = [
        (
            chat(
                "chat",
                "/v1/chat/completions",
                fx!("openai_chat_stream_request.json"),
                fx!("openai_chat_stream.sse"),
            ),
            "data: [DONE]",
            false,
        ),
        (
            chat(
                "completions",
                "/v1/completions",
                fx!("openai_completions_stream_request.json"),
                fx!("openai_completions_stream.sse"),
            ),
            "data: [DONE]",
            false,
        ),
        (
            chat(
                "responses",
                "/v1/responses",
                fx!("openai_responses_stream_request.json"),
                fx!("openai_responses_stream.sse"),
            ),
            "event: response.completed",
            false,
        ),
        (
            anthropic(fx!("anthropic_stream.sse")),
            "event: message_stop",
            false,
        ),
        (
            anthropic(fx!("error_anthropic_stream.sse")),
            "event: error",
            false,
        ),
        // Gemini has no end event: the element whose candidate has a finish reason is last,
        // in an event stream and in a JSON array stream alike.
        (
            gemini(
                "gemini sse",
                path,
                Some("alt=sse"),
                req,
                SSE,
                fx!("gemini_stream.sse"),
            ),
            "\"finishReason\"",
            false,
        ),
        (
            gemini(
                "gemini array",
                path,
                None,
                req,
                JSON,
                fx!("gemini_stream_array.json"),
            ),
            "\"finishReason\"",
            false,
        ),
        // A whole JSON body is complete when its top-level value closes.
        (
            openai(
                "chat json",
                "/v1/chat/completions",
                fx!("openai_chat_request.json"),
                JSON,
                fx!("openai_chat_response.json"),
            ),
            "}",
            true,
        ),
    ];
    for (case, marker, last) in &cases {
        let ms = terminal_arrival(case, marker, *last);
        assert!(
            ms.is_some_and(|ms| (ms - 20.0).abs() < 1e-6),
            "{}: {ms:?}",
            case.name
        );
    }
}

#[test]
fn a_terminal_event_seen_only_after_decoding_came_with_the_last_chunk() {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(fx!("anthropic_stream.sse")).unwrap();
    let gz: &'static [u8] = Vec::leak(e.finish().unwrap());
    let case = Case {
        name: "gzip stream",
        host: "api.anthropic.com",
        path: "/v1/messages",
        query: None,
        request: fx!("anthropic_stream_request.json"),
        content_type: SSE,
        response_headers: &[("content-encoding", "gzip")],
        response: gz,
    };
    let chunks: Vec<&[u8]> = gz.chunks(gz.len() / 3 + 1).collect();
    assert_eq!(chunks.len(), 3);
    let a = run(&case, &chunks);
    assert!(
        a.progress
            .terminal_ms
            .is_some_and(|ms| (ms - 30.0).abs() < 1e-6),
        "{:?}",
        a.progress
    );
    // Cut before its end, the decoded stream has no terminal event.
    let a = run(&case, &chunks[..2]);
    assert_eq!(a.progress.terminal_ms, None);
}
