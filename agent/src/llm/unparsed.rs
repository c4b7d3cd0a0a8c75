//! What the request detectors scan when the body is not the document its parser expects: the
//! analysis must never see less than the provider will.
//!
//! - A body that is not JSON (or was cut by the capture bound) is scanned as raw text, with
//!   JSON string escapes decoded first: a provider decodes `AKIA\u0049…` to `AKIAI…`, so the
//!   detectors must see it that way too.
//! - A JSON document whose shape the dialect parser does not know (an unknown API, or a prompt
//!   in a field it does not read) gives an empty prompt: then every string value of the
//!   document is scanned.

use std::borrow::Cow;

use serde_json::Value;

use super::model::RequestInfo;

/// The message of the provider-shaped refusal under `on_unparsed = "block"`.
pub const BLOCK_MESSAGE: &str =
    "Blocked by llmtrace policy: the request body could not be analysed";

/// The text the request detectors scan: the parsed prompt; every string of `document` when
/// the prompt is empty or was cut by the stored-text bound (the newest messages are last, so
/// the cut dropped them; the analysis budget covers them newest first); or `raw` with JSON
/// escapes decoded when there is no document.
pub fn scan_text<'a>(
    request: &'a RequestInfo,
    document: Option<&Value>,
    raw: &'a str,
) -> Cow<'a, str> {
    let prompt = request.prompt.as_str();
    match document {
        None => unescape_json(raw),
        Some(v) if prompt.trim().is_empty() || request.prompt_truncated => {
            let mut out = String::new();
            collect_strings(v, &mut out);
            Cow::Owned(out)
        }
        Some(_) => Cow::Borrowed(prompt),
    }
}

/// Every string (values and keys) of `v`, one per line.
fn collect_strings(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push_str(k);
                out.push('\n');
                collect_strings(v, out);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// `text` with every JSON string escape (`\uXXXX` with surrogate pairs, `\n`, `\"`, …)
/// decoded wherever it appears; anything that is not a valid escape is kept as it is.
pub fn unescape_json(text: &str) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let (decoded, used) = escape_at(&rest[at..]);
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[at..at + used]),
        }
        rest = &rest[at + used..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Decodes the escape at the start of `s` (which starts with `\`); returns the character (or
/// `None` when it is not a valid escape) and how many bytes it took.
fn escape_at(s: &str) -> (Option<char>, usize) {
    let b = s.as_bytes();
    let simple = match b.get(1) {
        Some(b'"') => Some('"'),
        Some(b'\\') => Some('\\'),
        Some(b'/') => Some('/'),
        Some(b'b') => Some('\u{8}'),
        Some(b'f') => Some('\u{c}'),
        Some(b'n') => Some('\n'),
        Some(b'r') => Some('\r'),
        Some(b't') => Some('\t'),
        Some(b'u') => None,
        _ => return (None, 1),
    };
    if simple.is_some() {
        return (simple, 2);
    }
    let Some(hi) = hex4(s, 2) else {
        return (None, 1);
    };
    if (0xD800..0xDC00).contains(&hi) {
        // A high surrogate: a valid pair continues with `\uDC00`–`\uDFFF`.
        if s.get(6..8) == Some("\\u")
            && let Some(lo) = hex4(s, 8)
            && (0xDC00..0xE000).contains(&lo)
        {
            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            return (char::from_u32(c), 12);
        }
        return (Some(char::REPLACEMENT_CHARACTER), 6);
    }
    (
        Some(char::from_u32(hi).unwrap_or(char::REPLACEMENT_CHARACTER)),
        6,
    )
}

fn hex4(s: &str, at: usize) -> Option<u32> {
    let digits = s.get(at..at + 4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_are_decoded_before_a_raw_text_scan() {
        assert_eq!(
            unescape_json(r"AKIA\u0049OSFODNN7EXAMPLE"),
            "AKIAIOSFODNN7EXAMPLE"
        );
        assert_eq!(unescape_json(r#"a\"b\\c\/d\ne"#), "a\"b\\c/d\ne");
        assert_eq!(unescape_json(r"\ud83d\ude00 ok"), "\u{1F600} ok");
        assert_eq!(unescape_json(r"lone \ud83d high"), "lone \u{FFFD} high");
        // Not escapes: kept as they are, never a panic on a cut-off tail.
        assert_eq!(unescape_json(r"\q \u12 \u"), r"\q \u12 \u");
        assert_eq!(unescape_json("\\"), "\\");
        assert_eq!(unescape_json("é\\u00e9"), "éé");
    }

    #[test]
    fn an_empty_prompt_scans_every_string_of_the_document() {
        let v: Value = serde_json::json!({
            "assistant_id": "asst_1",
            "additional_messages": [{"content": [{"text": "my key AKIAIOSFODNN7EXAMPLE"}]}],
            "n": 1
        });
        let info = |prompt: &str, cut: bool| RequestInfo {
            prompt: prompt.into(),
            prompt_truncated: cut,
            ..RequestInfo::default()
        };
        let empty = info("", false);
        let text = scan_text(&empty, Some(&v), "");
        assert!(text.contains("AKIAIOSFODNN7EXAMPLE"), "{text}");
        assert!(text.contains("asst_1"), "{text}");
        assert_eq!(
            scan_text(&info("user: hi", false), Some(&v), ""),
            "user: hi"
        );
        assert_eq!(scan_text(&info("", false), None, r"{\u0041"), "{A");
        // A prompt cut by the stored-text bound lost its newest messages: all strings instead.
        let cut_info = info("user: hi", true);
        let cut = scan_text(&cut_info, Some(&v), "");
        assert!(cut.contains("AKIAIOSFODNN7EXAMPLE"), "{cut}");
    }

    mod through_the_exchange {
        use std::time::Instant;

        use crate::analysis::{Action, PolicyRule, policy::OnUnparsed};
        use crate::llm::{Engine, Exchange, LlmConfig, RequestHead};

        const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

        fn engine(on_unparsed: OnUnparsed, secrets: Action) -> std::sync::Arc<Engine> {
            let mut cfg = LlmConfig::default();
            cfg.analysis.on_unparsed = on_unparsed;
            cfg.analysis.policy.rules.push(PolicyRule {
                selector: crate::control::Selector::default(),
                kind: Some("secret".into()),
                min_severity: None,
                location: None,
                action: secrets,
            });
            Engine::new(cfg, b"k")
        }

        fn verdict(
            e: &std::sync::Arc<Engine>,
            path: &str,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> (Action, Option<u16>, String) {
            let head = RequestHead {
                method: "POST",
                host: "api.openai.com",
                path,
                query: None,
                headers,
            };
            let t = Instant::now();
            let mut ex = Exchange::start(e, &head, t).unwrap();
            let v = ex.request_body(body, true);
            let status = v.block.as_ref().map(|b| b.status);
            let a = ex.finish();
            assert_eq!(a.action, v.action, "the trace says what was enforced");
            (v.action, status, a.error.unwrap_or_default())
        }

        #[test]
        fn an_escaped_secret_in_a_body_that_is_not_json_is_still_found() {
            let e = engine(OnUnparsed::Allow, Action::Block);
            // Cut-off JSON (not a document) hiding the key behind a \u escape.
            let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"AKIA\u0049OSFODNN7EXAMPLE"#;
            let (action, status, _) = verdict(&e, "/v1/chat/completions", &[], body.as_bytes());
            assert_eq!((action, status), (Action::Block, Some(403)));
        }

        #[test]
        fn an_unknown_api_shape_scans_every_string() {
            let e = engine(OnUnparsed::Flag, Action::Block);
            let body = format!(
                r#"{{"assistant_id":"a","additional_messages":[{{"content":[{{"text":"use {KEY}"}}]}}]}}"#
            );
            let (action, _, _) = verdict(&e, "/v1/threads/runs", &[], body.as_bytes());
            assert_eq!(action, Action::Block);
        }

        #[test]
        fn an_unreadable_body_follows_on_unparsed() {
            let garbage = b"\x00\x01 not json at all";
            let gzip = [("content-encoding", "gzip")];
            for (on, want) in [
                (OnUnparsed::Allow, Action::Allow),
                (OnUnparsed::Flag, Action::Flag),
                (OnUnparsed::Block, Action::Block),
            ] {
                let e = engine(on, Action::Flag);
                let (action, status, error) = verdict(&e, "/v1/chat/completions", &[], garbage);
                assert_eq!(action, want, "{on:?}: not JSON");
                assert_eq!(status, (want == Action::Block).then_some(403));
                assert!(error.contains("not JSON"), "{error}");
                let (action, _, error) = verdict(&e, "/v1/chat/completions", &gzip, garbage);
                assert_eq!(action, want, "{on:?}: does not decode");
                assert!(error.contains("not analysed"), "{error}");
            }
            // An empty body (a GET, a bodiless POST) is not unparsed.
            let e = engine(OnUnparsed::Block, Action::Flag);
            let (action, _, _) = verdict(&e, "/v1/models", &[], b"");
            assert_eq!(action, Action::Allow);
        }
    }
}
