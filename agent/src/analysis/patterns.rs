//! Regex-table detectors. Patterns with a literal the regex engine can search for (`AKIA`, `@`,
//! `://`) run alone, behind that literal prefilter; the others share one `RegexSet` pass that
//! says which of them occur at all. Only patterns that occur run again to find spans. Patterns are byte regexes with Unicode off, so every search stays on the fast
//! DFA engines and runs in time linear in the (bounded) input.

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::finding::{Finding, Location, Severity, drop_overlaps};

/// One pattern of a table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub kind: &'static str,
    pub severity: Severity,
    pub confidence: f32,
    pub pattern: &'static str,
    /// Capture group holding the sensitive part (0 = whole match).
    pub group: usize,
    /// Extra check on the sensitive part (checksum, placeholder filter).
    pub validate: Option<fn(&str) -> bool>,
    /// Masks the sensitive part for the excerpt.
    pub mask: fn(&str) -> String,
    /// Has a required literal: cheaper run alone than inside the shared set.
    pub alone: bool,
}

/// A compiled table.
#[derive(Debug)]
pub(crate) struct PatternSet {
    specs: Vec<Spec>,
    set: RegexSet,
    regexes: Vec<Regex>,
}

impl PatternSet {
    pub fn new(specs: &[Spec]) -> Self {
        let set = RegexSetBuilder::new(specs.iter().filter(|s| !s.alone).map(|s| s.pattern))
            .unicode(false)
            .size_limit(64 << 20)
            .dfa_size_limit(16 << 20)
            .build()
            .expect("built-in detector patterns compile");
        let regexes = specs
            .iter()
            .map(|s| {
                RegexBuilder::new(s.pattern)
                    .unicode(false)
                    .build()
                    .expect("built-in detector pattern compiles")
            })
            .collect();
        Self {
            specs: specs.to_vec(),
            set,
            regexes,
        }
    }

    /// Appends findings in `text` (earlier specs win where matches overlap).
    pub fn scan(&self, text: &str, location: Location, out: &mut Vec<Finding>) {
        let bytes = text.as_bytes();
        let from = out.len();
        let shared = self.set.matches(bytes);
        let mut in_set = 0;
        for (i, spec) in self.specs.iter().enumerate() {
            let occurs = if spec.alone {
                self.regexes[i].is_match(bytes)
            } else {
                in_set += 1;
                shared.matched(in_set - 1)
            };
            if !occurs {
                continue;
            }
            for caps in self.regexes[i].captures_iter(bytes) {
                let Some(m) = caps.get(spec.group) else {
                    continue;
                };
                let Some(part) = text.get(m.range()) else {
                    continue;
                };
                if spec.validate.is_some_and(|v| !v(part)) {
                    continue;
                }
                out.push(Finding {
                    kind: spec.kind,
                    severity: spec.severity,
                    confidence: spec.confidence,
                    location,
                    excerpt: excerpt(
                        text,
                        caps.get(0).map_or(m.range(), |w| w.range()),
                        m.range(),
                        spec.mask,
                    ),
                    span: m.range(),
                });
            }
        }
        drop_overlaps(out, from);
    }
}

/// The whole match with its sensitive part masked, cut to a readable length.
fn excerpt(
    text: &str,
    whole: std::ops::Range<usize>,
    part: std::ops::Range<usize>,
    mask: fn(&str) -> String,
) -> String {
    let before = text.get(whole.start..part.start).unwrap_or("");
    let after = text.get(part.end..whole.end).unwrap_or("");
    let masked = mask(text.get(part).unwrap_or(""));
    let tail: String = after.chars().take(16).collect();
    let head: String = before
        .chars()
        .rev()
        .take(32)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("{head}{masked}{tail}")
}

/// Rejects placeholder values (`<password>`, `${PASS}`, `****`, `changeme`…).
pub(crate) fn not_placeholder(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let first = s.chars().next().unwrap_or('*');
    !(matches!(first, '<' | '$' | '{' | '*' | '%' | '[')
        || s.chars().all(|c| c == s.chars().next().unwrap_or('x'))
        || [
            "password", "passwd", "pass", "secret", "changeme", "example", "xxxx", "your",
            "redacted", "none", "null", "true", "false",
        ]
        .iter()
        .any(|p| lower == *p || lower.starts_with("your"))
        || lower.contains("redacted"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert!(!not_placeholder("${DB_PASSWORD}"));
        assert!(!not_placeholder("password"));
        assert!(!not_placeholder("your_api_key"));
        assert!(!not_placeholder("********"));
        assert!(not_placeholder("s3cr3t-Pa55"));
    }
}
