//! Request and response phases of every dialect on arbitrary bodies (JSON or not): never
//! panics, and the analysis always serialises. The direct read of an OpenAI request gives
//! the general path's reading or nothing.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::llm::provider::ApiKind;
use llmtrace_agent::llm::{Engine, Exchange, LlmConfig, RequestHead, openai};

static ENGINE: LazyLock<Arc<Engine>> =
    LazyLock::new(|| Engine::new(LlmConfig::default(), b"fuzz"));

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let (host, path) = match which % 4 {
        0 => ("api.openai.com", "/v1/chat/completions"),
        1 => ("api.openai.com", "/v1/responses"),
        2 => ("api.anthropic.com", "/v1/messages"),
        _ => (
            "generativelanguage.googleapis.com",
            "/v1beta/models/gemini-2.5-pro:generateContent",
        ),
    };
    let t = Instant::now();
    let head = RequestHead {
        method: "POST",
        host,
        path,
        query: None,
        headers: &[],
    };
    let mut ex = Exchange::start(&ENGINE, &head, t).expect("known endpoint");
    let v = ex.request_body(body, true);
    ex.response_head(200, &[("content-type", "text/event-stream")]);
    let _ = ex.response_chunk(body, t);
    let a = ex.finish();
    // Findings only ever carry masked excerpts; the whole analysis serialises.
    assert!(v.findings.iter().all(|f| f.excerpt.len() < 400));
    serde_json::to_string(&a).expect("analysis serialises");
    if let Ok(text) = std::str::from_utf8(body)
        && let Some(direct) = openai::read_request(text)
    {
        let v: serde_json::Value = serde_json::from_str(text).expect("the direct read took JSON");
        assert_eq!(direct, openai::parse_request(ApiKind::ChatCompletions, &v));
    }
});
