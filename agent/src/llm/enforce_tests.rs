//! Enforcement through the exchange API: block, redact, stream stop; secrets masked everywhere.

// Test code: short names for the exchange under test and its parts read best here.
#![allow(
    clippy::many_single_char_names,
    clippy::format_push_string,
    clippy::float_cmp
)]

use std::sync::Arc;
use std::time::Instant;

use super::{Engine, Exchange, LlmConfig, RequestHead};
use crate::analysis::{Action, PolicyRule};

const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

fn engine(action: Action) -> Arc<Engine> {
    let mut cfg = LlmConfig::default();
    cfg.analysis.policy.rules.push(PolicyRule {
        selector: crate::control::Selector::default(),
        kind: Some("secret".into()),
        min_severity: Some(crate::analysis::Severity::High),
        location: None,
        action,
    });
    Engine::new(cfg, b"k")
}

fn head<'a>(host: &'a str, path: &'a str) -> RequestHead<'a> {
    RequestHead {
        method: "POST",
        host,
        path,
        query: None,
        headers: &[],
    }
}

fn body() -> Vec<u8> {
    format!(r#"{{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{{"role":"user","content":"deploy with {KEY} please"}}]}}"#).into_bytes()
}

#[test]
fn block_gives_provider_shaped_403_and_masked_trace() {
    let e = engine(Action::Block);
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &head("api.anthropic.com", "/v1/messages"), t).unwrap();
    let v = ex.request_body(&body(), true);
    assert_eq!(v.action, Action::Block);
    let b = v.block.expect("block response");
    assert_eq!(b.status, 403);
    let j: serde_json::Value = serde_json::from_slice(&b.body).unwrap();
    assert_eq!(j["type"], "error");
    assert_eq!(j["error"]["type"], "permission_error");
    let a = ex.finish();
    assert_eq!(a.action, Action::Block);
    assert_eq!(a.input_tokens, None, "nothing was sent upstream");
    let all = format!(
        "{}{}{a:?}",
        String::from_utf8_lossy(&b.body),
        serde_json::to_string(&a).unwrap()
    );
    assert!(!all.contains(KEY), "{all}");
}

#[test]
fn redact_forwards_valid_json_without_the_key() {
    let e = engine(Action::Redact);
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &head("api.openai.com", "/v1/chat/completions"), t).unwrap();
    let v = ex.request_body(&body(), true);
    assert_eq!(v.action, Action::Redact);
    let fwd = v.redacted_body.expect("redacted body");
    let j: serde_json::Value = serde_json::from_slice(&fwd).unwrap();
    assert_eq!(
        j["messages"][0]["content"],
        "deploy with [REDACTED:secret.aws_access_key] please"
    );
    assert!(v.findings.iter().all(|f| !f.excerpt.contains(KEY)));
    let a = ex.finish();
    assert_eq!(a.action, Action::Redact);
    assert!(!serde_json::to_string(&a).unwrap().contains(KEY));
}

#[test]
fn streamed_secret_stops_the_stream_with_an_error_event() {
    let e = engine(Action::Block);
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &head("api.openai.com", "/v1/chat/completions"), t).unwrap();
    ex.request_body(
        br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        true,
    );
    ex.response_head(200, &[("content-type", "text/event-stream")]);
    let text = format!(
        "Sure, the production credentials are {KEY} and the region is us-east-1. {}",
        "More text. ".repeat(20)
    );
    let mut stop = None;
    for piece in text.as_bytes().chunks(6) {
        let delta = serde_json::json!({"choices":[{"index":0,"delta":{"content":String::from_utf8_lossy(piece)}}]});
        if let Some(s) = ex.response_chunk(format!("data: {delta}\n\n").as_bytes(), Instant::now())
        {
            stop = Some(s);
            break;
        }
    }
    let stop = stop.expect("stream stopped");
    assert_eq!(stop.finding.kind, "secret.aws_access_key");
    let ev = String::from_utf8(stop.event).unwrap();
    assert!(
        ev.starts_with("data: {\"error\"") && ev.ends_with("data: [DONE]\n\n") && !ev.contains(KEY)
    );
    let a = ex.finish();
    assert!(a.early_stopped);
    assert_eq!(a.action, Action::Block);
    assert!(!serde_json::to_string(&a).unwrap().contains(KEY));
}

#[test]
fn a_stream_is_watched_only_under_a_policy_that_can_block() {
    let t = Instant::now();
    for (action, watched) in [(Action::Block, true), (Action::Flag, false)] {
        let e = engine(action);
        let mut ex =
            Exchange::start(&e, &head("api.openai.com", "/v1/chat/completions"), t).unwrap();
        ex.request_body(
            br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            true,
        );
        assert_eq!(ex.stream_may_stop(), watched, "{action:?}");
        ex.response_head(200, &[("content-type", "text/event-stream")]);
        // Longer than the monitor's scan step, so a watched stream is judged on this event.
        let content = format!("{KEY} {}", "more text ".repeat(20));
        let event = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}}}}]}}\n\n"
        );
        let stop = ex.response_chunk(event.as_bytes(), Instant::now());
        assert_eq!(stop.is_some(), watched, "{action:?}");
        // Unwatched, the stream waits unparsed for the analysis pool, which still finds the key.
        assert_eq!(ex.held_bytes() > 0, !watched, "{action:?}");
        let a = ex.finish();
        assert_eq!(a.early_stopped, watched);
        assert_eq!(a.action, action);
    }
}

#[test]
fn bad_input_is_survived() {
    let e = engine(Action::Block);
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &head("api.openai.com", "/v1/chat/completions"), t).unwrap();
    let v = ex.request_body(b"\x1f\x8b not really gzip", false);
    // Unreadable, so not passed as clean: `on_unparsed` (default `flag`) decides.
    assert_eq!(v.action, Action::Flag);
    ex.response_head(
        500,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
    );
    ex.response_chunk(b"\x00\x01\x02garbage", t);
    let a = ex.finish();
    assert!(a.request_truncated);
    assert!(a.error.is_some());
    assert_eq!(a.status, Some(500));
}

#[test]
fn a_shared_chunk_is_captured_by_reference_and_analysed_like_a_copied_one() {
    let e = engine(Action::Flag);
    let t = Instant::now();
    let answer = format!(
        r#"{{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{{"index":0,"message":{{"role":"assistant","content":"the key is {KEY}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}}}"#
    );
    let (first, second) = answer.as_bytes().split_at(40);
    let run = |shared: bool| {
        let mut ex =
            Exchange::start(&e, &head("api.openai.com", "/v1/chat/completions"), t).unwrap();
        ex.request_body(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
            true,
        );
        ex.response_head(200, &[("content-type", "application/json")]);
        let chunks = [
            bytes::Bytes::copy_from_slice(first),
            bytes::Bytes::copy_from_slice(second),
        ];
        for c in &chunks {
            let stop = if shared {
                ex.response_bytes(c, t)
            } else {
                ex.response_chunk(c, t)
            };
            assert!(stop.is_none());
        }
        let captured = ex.captured();
        assert_eq!(captured.len(), 2);
        for (held, given) in captured.iter().zip(&chunks) {
            assert_eq!(held, given);
            assert_eq!(held.as_ptr() == given.as_ptr(), shared, "shared: {shared}");
        }
        assert_eq!(ex.held_bytes(), answer.len());
        ex.finish()
    };
    let (by_reference, copied) = (run(true), run(false));
    assert!(
        by_reference
            .findings
            .iter()
            .any(|f| f.kind.starts_with("secret"))
    );
    assert_eq!(by_reference, copied);
}
