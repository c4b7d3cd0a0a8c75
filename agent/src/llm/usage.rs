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

/// `text.split_whitespace().count()` for ASCII text, which most text is: decoding every char
/// cost a few percent of a streamed exchange's whole analysis. A word starts at a byte that
/// is no space after one that is (or at the start): 16 bytes at a time, as bit masks.
fn words(text: &str) -> u64 {
    if !text.is_ascii() {
        return text.split_whitespace().count() as u64;
    }
    let (blocks, tail) = text.as_bytes().as_chunks::<16>();
    // The tail as a last block padded with spaces, which start no word.
    let mut last = [b' '; 16];
    last[..tail.len()].copy_from_slice(tail);
    // Whether the byte before the next one is a space (the start counts as one).
    let mut after_space = true;
    let mut n = 0u64;
    for block in blocks.iter().chain([&last]) {
        let spaces = space_mask(block);
        let starts = !spaces & ((spaces << 1) | u32::from(after_space)) & 0xFFFF;
        n += u64::from(starts.count_ones());
        after_space = spaces & 0x8000 != 0;
    }
    n
}

/// The ASCII chars `char::is_whitespace` accepts: space, and tab to carriage return (which
/// includes vertical tab and form feed, unlike `u8::is_ascii_whitespace`).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn is_space(b: u8) -> bool {
    b == b' ' || (b'\t'..=b'\r').contains(&b)
}

/// Bit `i` set where `block[i]` [`is_space`]: a compare for the space, and one for the range
/// from tab (its bytes less 9 are at most 4).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn space_mask(block: &[u8; 16]) -> u32 {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i, sub_i8_m128i,
    };
    let v = load_unaligned_m128i(block);
    let space = cmp_eq_mask_i8_m128i(v, set_splat_i8_m128i(b' '.cast_signed()));
    let from_tab = sub_i8_m128i(v, set_splat_i8_m128i(b'\t'.cast_signed()));
    let controls = cmp_eq_mask_i8_m128i(min_u8_m128i(from_tab, set_splat_i8_m128i(4)), from_tab);
    move_mask_i8_m128i(bitor_m128i(space, controls)).cast_unsigned()
}

/// [`space_mask`] a byte at a time, where SSE2 is not there to ask.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn space_mask(block: &[u8; 16]) -> u32 {
    block
        .iter()
        .enumerate()
        .fold(0, |m, (i, &b)| m | u32::from(is_space(b)) << i)
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
        // Words across the 16-byte blocks: a space or a letter at every place around the
        // first two blocks' edges, in texts of every length to three blocks.
        for len in 0..=48 {
            for at in 0..len {
                for (fill, odd) in [(b'a', b' '), (b' ', b'a'), (b'\r', b'b'), (b'c', 0x0b)] {
                    let mut t = vec![fill; len];
                    t[at] = odd;
                    texts.push(String::from_utf8(t).unwrap());
                }
            }
        }
        for t in &texts {
            assert_eq!(words(t), t.split_whitespace().count() as u64, "{t:?}");
        }
    }

    #[test]
    fn the_space_mask_marks_what_char_is_whitespace_marks() {
        for b in 0..=0x7f_u8 {
            let block = [b; 16];
            let want = if char::from(b).is_whitespace() {
                0xFFFF
            } else {
                0
            };
            assert_eq!(space_mask(&block), want, "{b:#x}");
            assert_eq!(is_space(b), want != 0, "{b:#x}");
        }
    }
}
