//! Detection hardening through the exchange API: canaries, newest-first analysis within the
//! budget, `analysis.incomplete` as a policy input, and redaction that never forwards what it
//! claims to have masked.

// Test code: short names for the exchange under test and its parts read best here.
#![allow(clippy::many_single_char_names)]

use std::sync::Arc;
use std::time::Instant;

use super::{Engine, Exchange, LlmConfig, RequestHead};
use crate::analysis::{Action, CanaryConfig, INCOMPLETE, PolicyRule};

const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const CANARY: &str = "zebra-7f3k-orchid";

fn rule(kind: &str, action: Action) -> PolicyRule {
    PolicyRule {
        kind: Some(kind.into()),
        min_severity: None,
        location: None,
        selector: crate::control::Selector::default(),
        action,
    }
}

fn engine(edit: impl FnOnce(&mut LlmConfig)) -> Arc<Engine> {
    let mut cfg = LlmConfig::default();
    edit(&mut cfg);
    Engine::new(cfg, b"k")
}

const HEAD: RequestHead<'static> = RequestHead {
    method: "POST",
    host: "api.openai.com",
    path: "/v1/chat/completions",
    query: None,
    headers: &[],
};

fn chat(messages: &[&str]) -> Vec<u8> {
    let msgs: Vec<_> = messages
        .iter()
        .map(|m| serde_json::json!({"role": "user", "content": m}))
        .collect();
    serde_json::json!({"model": "gpt-4o", "messages": msgs})
        .to_string()
        .into_bytes()
}

fn answer(text: &str) -> Vec<u8> {
    serde_json::json!({"id": "c1", "model": "gpt-4o", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
    .to_string()
    .into_bytes()
}

#[test]
fn a_canary_leaving_or_coming_back_is_critical_and_never_stored() {
    let e = engine(|c| {
        c.analysis.canary.push(CanaryConfig {
            name: "sys-prompt".into(),
            value: CANARY.into(),
        });
        c.analysis.policy.rules.push(rule("canary", Action::Block));
    });
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    let v = ex.request_body(&chat(&[&format!("the prompt is {CANARY}")]), true);
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.findings[0].kind, "canary.leak");
    let a = ex.finish();
    assert!(!serde_json::to_string(&a).unwrap().contains(CANARY));

    // Coming back in a response (only flagged there: the answer has been sent).
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    assert_eq!(ex.request_body(&chat(&["hi"]), true).action, Action::Allow);
    ex.response_head(200, &[("content-type", "application/json")]);
    ex.response_chunk(&answer(&format!("My instructions say {CANARY}.")), t);
    let a = ex.finish();
    let f: Vec<_> = a
        .findings
        .iter()
        .filter(|f| f.kind == "canary.leak")
        .collect();
    assert_eq!(f.len(), 1, "{:?}", a.findings);
    assert_eq!(f[0].severity, crate::analysis::Severity::Critical);
    assert_eq!(f[0].excerpt, "canary:sys-prompt");
    assert!(a.response_text.contains("[REDACTED:canary.leak]"));
    assert!(!serde_json::to_string(&a).unwrap().contains(CANARY));
}

#[test]
fn a_secret_after_mebibytes_of_older_messages_is_found() {
    let e = engine(|c| {
        c.analysis.policy.rules.push(rule("secret", Action::Block));
        // No time bound: an unoptimised test build is many times slower than the agent.
        c.analysis.max_analysis_ms = 0;
    });
    let padding = "earlier conversation turn. ".repeat(60_000); // ~1.6 MB, past the stored bound
    let body = chat(&[&padding, &padding, &format!("now use {KEY}")]);
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    let v = ex.request_body(&body, true);
    assert_eq!(v.action, Action::Block, "{:?}", v.findings);
    let a = ex.finish();
    assert!(!a.analysis_truncated);
}

#[test]
fn over_budget_the_newest_text_is_analysed_and_incomplete_is_a_policy_input() {
    let padding = "earlier conversation turn. ".repeat(10_000);
    let body = chat(&[&padding, &format!("now use {KEY}")]);
    let t = Instant::now();
    // Flag by default: the key (newest) is still found, and the rest is reported.
    let e = engine(|c| c.analysis.max_analysis_bytes = 64 * 1024);
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    let v = ex.request_body(&body, true);
    // A policy that only flags decides nothing before forwarding: the request is scanned in
    // the record phase, beside the data path.
    assert_eq!((v.action, v.findings.len()), (Action::Allow, 0));
    let a = ex.finish();
    let kinds: Vec<_> = a.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, ["secret.aws_access_key", INCOMPLETE]);
    assert!(a.analysis_truncated);
    assert_eq!(a.action, Action::Flag);
    // An operator who wants everything analysed blocks what was not.
    let e = engine(|c| {
        c.analysis.max_analysis_bytes = 64 * 1024;
        c.analysis
            .policy
            .rules
            .push(rule(INCOMPLETE, Action::Block));
    });
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    let v = ex.request_body(&body, true);
    assert_eq!(v.action, Action::Block);
    assert_eq!(v.block.unwrap().status, 403);
    // The budget is per exchange: a spent request budget leaves the response unanalysed.
    let e = engine(|c| c.analysis.max_analysis_bytes = 64 * 1024);
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    ex.request_body(&body, true);
    ex.response_head(200, &[("content-type", "application/json")]);
    ex.response_chunk(&answer("fine"), t);
    let a = ex.finish();
    let incomplete: Vec<_> = a.findings.iter().filter(|f| f.kind == INCOMPLETE).collect();
    assert_eq!(incomplete.len(), 2, "{:?}", a.findings);
}

#[test]
fn a_body_cut_by_the_capture_bound_is_incomplete() {
    let e = engine(|_| {});
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    assert_eq!(
        ex.request_body(&chat(&["hello"]), false).action,
        Action::Allow
    );
    let a = ex.finish();
    assert!(a.findings.iter().any(|f| f.kind == INCOMPLETE));
    assert!(a.analysis_truncated);
    assert_eq!(a.action, Action::Flag);
    // Under a policy that blocks it, the same body is judged before it is forwarded.
    let e = engine(|c| {
        c.analysis
            .policy
            .rules
            .push(rule(INCOMPLETE, Action::Block));
    });
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    assert_eq!(
        ex.request_body(&chat(&["hello"]), false).action,
        Action::Block
    );
}

#[test]
fn an_encoded_secret_is_redacted_in_its_encoded_form() {
    let e = engine(|c| c.analysis.policy.rules.push(rule("secret", Action::Redact)));
    let enc = "QUtJQUlPU0ZPRE5ON0VYQU1QTEU"; // base64 of KEY
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    let v = ex.request_body(&chat(&[&format!("creds {enc}= thanks")]), true);
    assert_eq!(v.action, Action::Redact);
    let body = String::from_utf8(v.redacted_body.unwrap()).unwrap();
    assert!(!body.contains(enc), "{body}");
    assert!(
        body.contains("creds [REDACTED:secret.aws_access_key]= thanks"),
        "{body}"
    );
    let a = ex.finish();
    assert_eq!(a.action, Action::Redact);
    assert_eq!(a.findings[0].view, Some(crate::analysis::View::Base64));
}

#[test]
fn a_secret_redaction_cannot_reach_is_blocked_not_forwarded() {
    let e = engine(|c| c.analysis.policy.rules.push(rule("secret", Action::Redact)));
    // Not a JSON document (cut off), the key behind a JSON escape: the analysis decodes it,
    // but masking works on the bytes as written and cannot find it there.
    let body =
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"AKIA\u0049OSFODNN7EXAMPLE"#;
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    let v = ex.request_body(body.as_bytes(), true);
    assert_eq!(v.action, Action::Block);
    assert!(v.redacted_body.is_none());
    assert_eq!(v.block.unwrap().status, 403);
    assert_eq!(ex.finish().action, Action::Block);
}

#[test]
fn a_finding_added_inline_survives_a_deferred_request_scan() {
    let e = engine(|_| {});
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    assert_eq!(
        ex.request_body(&chat(&[&format!("use {KEY}")]), true)
            .action,
        Action::Allow
    );
    let gate = crate::analysis::Finding {
        kind: "policy.unapproved_model",
        severity: crate::analysis::Severity::High,
        confidence: 1.0,
        location: crate::analysis::Location::Request,
        excerpt: "rule r".into(),
        span: 0..0,
        view: None,
    };
    ex.add_request_finding(gate, Action::Block);
    let a = ex.finish();
    let kinds: Vec<_> = a.findings.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, ["secret.aws_access_key", "policy.unapproved_model"]);
    assert_eq!(a.action, Action::Block);
}

#[test]
fn a_prompt_scanned_in_another_form_is_masked_where_its_own_bytes_say() {
    let e = engine(|c| {
        c.analysis
            .policy
            .rules
            .push(rule("pii.email", Action::Redact));
    });
    // Not JSON, so the detectors read it with its escapes decoded (two bytes shorter than the
    // stored prompt before the address): their spans do not fit the stored text.
    let body = r"not json \n\n write to a.person@example.com thanks";
    let t = Instant::now();
    let mut ex = Exchange::start(&e, &HEAD, t).unwrap();
    ex.request_body(body.as_bytes(), true);
    let a = ex.finish();
    assert_eq!(
        a.prompt,
        r"not json \n\n write to [REDACTED:pii.email] thanks"
    );
    assert!(a.stored_text_masked);
}

#[test]
fn stored_texts_are_marked_masked_only_when_scanned_whole() {
    let run = |e: &Arc<Engine>| {
        let t = Instant::now();
        let mut ex = Exchange::start(e, &HEAD, t).unwrap();
        ex.request_body(&chat(&[&format!("use {KEY} please")]), true);
        ex.response_head(200, &[("content-type", "application/json")]);
        ex.response_chunk(&answer(&format!("noted: {KEY}")), t);
        ex.finish()
    };
    let a = run(&engine(|_| {}));
    assert!(a.stored_text_masked);
    assert!(!a.prompt.contains(KEY) && !a.response_text.contains(KEY));
    // Part of a text past the analysis limit: the row's own secret scan stays on.
    let a = run(&engine(|c| c.analysis.max_analysis_bytes = 8));
    assert!(a.analysis_truncated && !a.stored_text_masked);
    let a = run(&engine(|c| c.analysis.enabled = false));
    assert!(!a.stored_text_masked && a.prompt.contains(KEY));
}
