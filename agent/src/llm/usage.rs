//! Token usage, normalised across providers.
//!
//! Normalisation: `input` counts every input token, cached ones included (OpenAI and Gemini report
//! it that way; Anthropic's three input counters are summed). `output` counts every output token,
//! reasoning included (Gemini reports thoughts separately; they are added). `cached_input`,
//! `cache_write` and `reasoning` are subsets. When the provider reported nothing, counts are
//! estimated from text length and `estimated` is set.

use std::collections::BTreeMap;

use serde::Serialize;

/// Token counts of one exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cached_input: Option<u64>,
    pub cache_write: Option<u64>,
    pub reasoning: Option<u64>,
    /// The counts are estimates (the provider reported none).
    pub estimated: bool,
}

impl Usage {
    /// True when no count is known.
    pub fn is_empty(&self) -> bool {
        self.input.is_none() && self.output.is_none()
    }

    /// Counts by kind, for a map column (new kinds need no migration).
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        [
            ("input", self.input),
            ("output", self.output),
            ("cached_input", self.cached_input),
            ("cache_write", self.cache_write),
            ("reasoning", self.reasoning),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    /// Fills missing input/output from text lengths; marks the usage estimated if it did.
    pub fn estimate_missing(&mut self, prompt: &str, response: &str) {
        if self.input.is_none() && !prompt.is_empty() {
            self.input = Some(estimate_tokens(prompt));
            self.estimated = true;
        }
        if self.output.is_none() && !response.is_empty() {
            self.output = Some(estimate_tokens(response));
            self.estimated = true;
        }
    }
}

/// Rough token count: about four bytes of English per token, at least one per word-ish chunk.
pub fn estimate_tokens(text: &str) -> u64 {
    let bytes = text.len() as u64;
    bytes.div_ceil(4).max(words(text))
}

/// `text.split_whitespace().count()`, a byte at a time for ASCII text: decoding every char
/// cost a few percent of a streamed exchange's whole analysis, and most text is ASCII.
fn words(text: &str) -> u64 {
    if !text.is_ascii() {
        return text.split_whitespace().count() as u64;
    }
    // The ASCII chars `char::is_whitespace` accepts: space, and tab to carriage return
    // (which includes vertical tab and form feed, unlike `u8::is_ascii_whitespace`).
    let space = |b: u8| b == b' ' || (b'\t'..=b'\r').contains(&b);
    let mut after_space = true;
    let mut n = 0u64;
    for &b in text.as_bytes() {
        let s = space(b);
        n += u64::from(after_space && !s);
        after_space = s;
    }
    n
}

/// Reads a JSON number as `u64`.
pub(crate) fn num(v: &serde_json::Value, key: &str) -> Option<u64> {
    v.get(key).and_then(serde_json::Value::as_u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_only_fills_missing() {
        let mut u = Usage {
            input: Some(10),
            ..Usage::default()
        };
        u.estimate_missing("hello there", "a response of some words");
        assert_eq!(u.input, Some(10));
        assert_eq!(u.output, Some(6));
        assert!(u.estimated);
        assert_eq!(u.by_kind().get("output"), Some(&6));
        assert!(!u.by_kind().contains_key("reasoning"));
    }

    #[test]
    fn words_are_counted_as_split_whitespace_counts_them() {
        let mut texts: Vec<String> = [
            "",
            " ",
            "one",
            "  two  words ",
            "tab\tnew\nline\rcr\x0bvt\x0cff end",
            "\x0b\x0c\x1c\x1f\x7f",
            "non\u{a0}breaking and\u{3000}ideographic\u{2028}line",
            "caf\u{e9} au lait",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Every mix of a few bytes, ASCII controls and spaces included.
        let alphabet = [b' ', b'\t', b'\n', 0x0b, 0x0c, b'\r', 0x1c, b'a', b'-'];
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    texts.push(String::from_utf8(vec![a, b, c, b'x', a]).unwrap());
                }
            }
        }
        for t in &texts {
            assert_eq!(words(t), t.split_whitespace().count() as u64, "{t:?}");
        }
    }
}
