//! Request redaction: masks the spans of findings whose action is `redact` inside every JSON
//! string literal of a body, keeping all other bytes (structure, key order, spacing) as they
//! were, so the result stays valid JSON.

use super::analyzer::Analyzer;
use super::finding::{Finding, Location};
use super::policy::{Action, PolicyConfig};

/// Redacted body plus the findings that were masked.
#[derive(Debug, Clone, PartialEq)]
pub struct Redacted {
    pub body: String,
    pub masked: Vec<Finding>,
}

/// Redacts `body`: inside its string literals when it is JSON (numbers, keys' structure and
/// spacing untouched), else as plain text. `None` when nothing was masked.
pub fn redact_body(body: &str, analyzer: &Analyzer, policy: &PolicyConfig) -> Option<Redacted> {
    let mut masked = Vec::new();
    if serde_json::from_str::<serde::de::IgnoredAny>(body).is_err() {
        return redact_text(body, analyzer, policy, &mut masked)
            .map(|body| Redacted { body, masked });
    }
    let mut out = String::with_capacity(body.len());
    let mut last = 0;
    for (start, end) in string_literals(body.as_bytes()) {
        let literal = &body[start..end];
        let Ok(value) = serde_json::from_str::<String>(literal) else {
            continue;
        };
        if let Some(new) = redact_text(&value, analyzer, policy, &mut masked) {
            out.push_str(&body[last..start]);
            out.push_str(&serde_json::to_string(&new).expect("strings serialise"));
            last = end;
        }
    }
    if masked.is_empty() {
        return None;
    }
    out.push_str(&body[last..]);
    Some(Redacted { body: out, masked })
}

/// Masks redact-action findings in `text`; `None` when there were none.
fn redact_text(
    text: &str,
    analyzer: &Analyzer,
    policy: &PolicyConfig,
    masked: &mut Vec<Finding>,
) -> Option<String> {
    let mut found = Vec::new();
    analyzer.scan_maskable(text, Location::Request, &mut found);
    let hits: Vec<Finding> = found
        .into_iter()
        .filter(|f| policy.action_for(f) == Action::Redact)
        .collect();
    if hits.is_empty() {
        return None;
    }
    let out = mask_findings(text, &hits);
    masked.extend(hits);
    Some(out)
}

/// Replaces the spans of `findings` in `text` with `[REDACTED:kind]` (overlaps skipped): used on
/// the texts stored in the trace, so secrets never reach storage or output.
pub fn mask_findings<'a>(text: &str, findings: impl IntoIterator<Item = &'a Finding>) -> String {
    let mut spans: Vec<&Finding> = findings
        .into_iter()
        .filter(|f| !f.span.is_empty() && text.get(f.span.clone()).is_some())
        .collect();
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort_by_key(|f| f.span.start);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for f in spans {
        if f.span.start < last {
            // Overlapping an earlier mask: that mask covers the union (a decoded segment can
            // start inside another finding and reach further).
            last = last.max(f.span.end);
            continue;
        }
        out.push_str(&text[last..f.span.start]);
        out.push_str("[REDACTED:");
        out.push_str(f.kind);
        out.push(']');
        last = f.span.end;
    }
    out.push_str(&text[last..]);
    out
}

/// True for findings whose text is always masked in stored copies: every secret and canary,
/// and any PII the policy redacts or blocks.
pub fn must_mask(f: &Finding, policy: &PolicyConfig) -> bool {
    match f.category() {
        "secret" | "canary" => true,
        "pii" => policy.action_for(f) >= Action::Redact,
        _ => false,
    }
}

/// Byte ranges (quotes included) of the string literals of a JSON text.
fn string_literals(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < b.len() && b[i] != b'"' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        if i >= b.len() {
            break;
        }
        i += 1;
        out.push((start, i));
    }
    out
}

/// Known secret formats, compiled once for the stored-text safety net below.
static SECRETS: std::sync::LazyLock<super::patterns::TableDetector> =
    std::sync::LazyLock::new(super::secrets::detector);

/// Compiles the known secret formats now instead of at their first use.
pub fn compile() {
    std::sync::LazyLock::force(&SECRETS);
}

/// `text` with every recognisable secret replaced by `[REDACTED:kind]`, whatever the policy and
/// whether analysis is on: the last step before any text is stored or printed.
pub fn mask_known_secrets(text: &str) -> String {
    let mut findings = Vec::new();
    SECRETS.scan(text, super::finding::Location::Request, &mut findings);
    mask_findings(text, &findings)
}

/// How far past a cut [`mask_known_secrets_cut`] scans: more than the longest secret the known
/// formats match (a PEM block of a 4096-bit RSA key is about 3.3 KB).
const CUT_MARGIN: usize = 16 * 1024;

/// `text` cut to at most `max` bytes (on a character boundary) with every recognisable secret
/// masked, and how many bytes of `text` it keeps. A secret the cut would split is cut out
/// whole: masked after the cut, its first part would no longer match its format and would be
/// stored as it is. So a first scan reaches past the cut, and the cut moves back to the start
/// of any secret across it.
pub fn mask_known_secrets_cut(text: &str, max: usize) -> (String, usize) {
    if text.len() <= max {
        return (mask_known_secrets(text), text.len());
    }
    let mut end = text.floor_char_boundary(max);
    let scanned = &text[..text.floor_char_boundary(end + CUT_MARGIN)];
    let mut findings = Vec::new();
    SECRETS.scan(scanned, super::finding::Location::Request, &mut findings);
    // Findings may overlap: moved back until none crosses the cut.
    while let Some(start) = findings
        .iter()
        .filter(|f| f.span.start < end && f.span.end > end)
        .map(|f| f.span.start)
        .min()
    {
        end = start;
    }
    // Scanned again as cut: a cut can also end a longer token where a secret's format now
    // matches (a key with letters glued on), and that is masked too.
    (mask_known_secrets(&text[..end]), end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::policy::PolicyRule;

    fn redact_policy() -> PolicyConfig {
        PolicyConfig {
            default_action: Action::Flag,
            rules: vec![PolicyRule {
                selector: crate::control::Selector::default(),
                kind: Some("secret".into()),
                min_severity: None,
                location: None,
                action: Action::Redact,
            }],
        }
    }

    #[test]
    fn masks_inside_json_and_keeps_it_valid() {
        let body = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "key \"AKIAIOSFODNN7EXAMPLE\"\nplease"}]}"#;
        let a = Analyzer::new(1 << 20);
        let r = redact_body(body, &a, &redact_policy()).unwrap();
        assert!(!r.body.contains("AKIAIOSFODNN7EXAMPLE"));
        assert!(
            r.body
                .starts_with(r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "#)
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            v["messages"][0]["content"],
            "key \"[REDACTED:secret.aws_access_key]\"\nplease"
        );
        assert_eq!(r.masked.len(), 1);
    }

    #[test]
    fn flag_only_policy_changes_nothing() {
        let a = Analyzer::new(1 << 20);
        assert!(
            redact_body(
                r#"{"c":"AKIAIOSFODNN7EXAMPLE"}"#,
                &a,
                &PolicyConfig::default()
            )
            .is_none()
        );
        assert!(redact_body(r#"{"c":"hello"}"#, &a, &redact_policy()).is_none());
    }

    #[test]
    fn json_without_strings_is_left_alone() {
        let a = Analyzer::new(1 << 20);
        let p = PolicyConfig {
            default_action: Action::Redact,
            rules: Vec::new(),
        };
        assert!(redact_body("22222220222222", &a, &p).is_none());
        let r = redact_body("say \"hi\" AKIAIOSFODNN7EXAMPLE", &a, &p).unwrap();
        assert_eq!(r.body, "say \"hi\" [REDACTED:secret.aws_access_key]");
    }

    #[test]
    fn plain_text_body() {
        let a = Analyzer::new(1 << 20);
        let r = redact_body("id AKIAIOSFODNN7EXAMPLE", &a, &redact_policy()).unwrap();
        assert_eq!(r.body, "id [REDACTED:secret.aws_access_key]");
    }

    #[test]
    fn a_cut_never_keeps_part_of_a_secret() {
        let filler = "word ".repeat(40);
        let key = "AKIAIOSFODNN7EXAMPLE";
        let text = format!("{filler}{key} and more");
        for max in 0..text.len() + 2 {
            let (kept, n) = mask_known_secrets_cut(&text, max);
            assert!(n <= max && n <= text.len(), "{max}");
            assert!(!kept.contains("AKIA"), "{max}: {kept}");
            if max >= filler.len() + key.len() {
                assert!(kept.contains("[REDACTED:secret.aws_access_key]"), "{max}");
            } else {
                // Cut before the key: what is kept is the text before it, unmasked.
                assert_eq!(kept, text[..n], "{max}");
                assert!(n <= filler.len());
            }
        }
        // Not cut: the same as masking the whole text.
        assert_eq!(
            mask_known_secrets_cut(&text, text.len()),
            (mask_known_secrets(&text), text.len())
        );
    }
}
