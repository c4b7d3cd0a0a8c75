//! Evasion undone before detection: the detectors also run over transformed views of a text
//! (normalised Unicode, decoded base64 / hex / URL-escaped segments, ROT13), and what they find
//! there is reported on the span of the text as written that the view came from, so masking
//! it masks the encoded or disguised original.
//!
//! The fast path stays fast: a view is built only when a cheap check says it would differ
//! (non-ASCII characters that normalisation changes, a `%XX` escape, a long run of base64
//! bytes, a ROT13 anchor seen by the shared trigger pass). Decoding is bounded: only segments
//! of [`encoded::MIN_BASE64`] bytes or more, and at most [`MAX_DECODED`] decoded bytes per
//! text.

pub mod encoded;
pub mod normalize;

use std::ops::Range;

use super::finding::{Finding, View};

/// Decoded bytes scanned per text at most (base64 and hex segments together).
pub const MAX_DECODED: usize = 256 * 1024;

/// A view of a text with, for each of its bytes, where in the text it came from.
#[derive(Debug, Default)]
pub struct Mapped {
    pub text: String,
    /// `map[i]`: start in the original of the character view byte `i` came from; one more
    /// entry holds the original's length.
    map: Vec<u32>,
}

impl Mapped {
    fn with_capacity(n: usize) -> Self {
        Self {
            text: String::with_capacity(n),
            map: Vec::with_capacity(n + 1),
        }
    }

    fn push(&mut self, c: char, from: usize) {
        self.text.push(c);
        let at = u32::try_from(from).unwrap_or(u32::MAX);
        self.map.extend(std::iter::repeat_n(at, c.len_utf8()));
    }

    /// Appends `s`, unchanged, which starts at `from` in the original: each of its bytes maps
    /// to the start of its own character. A run at a time, instead of a character at a time.
    fn push_unchanged(&mut self, s: &str, from: usize) {
        self.text.push_str(s);
        // `s` starts with a character, so the first byte sets `at`.
        let mut at = 0;
        self.map.extend(s.bytes().enumerate().map(|(j, b)| {
            // A UTF-8 continuation byte (10xxxxxx) belongs to the character before it.
            if b & 0xC0 != 0x80 {
                at = u32::try_from(from + j).unwrap_or(u32::MAX);
            }
            at
        }));
    }

    fn finish(&mut self, original_len: usize) {
        self.map
            .push(u32::try_from(original_len).unwrap_or(u32::MAX));
    }

    /// The span of the original covering the characters `span` of the view came from (with
    /// any dropped invisible characters between or right after them).
    pub fn original(&self, span: Range<usize>) -> Range<usize> {
        let len = self.map.len() - 1;
        let s = span.start.min(len);
        let e = span.end.clamp(s, len);
        let start = self.map[s] as usize;
        if e == s {
            return start..start;
        }
        let last = self.map[e - 1];
        let end = self.map[e..]
            .iter()
            .find(|&&m| m > last)
            .map_or(self.map[len], |&m| m) as usize;
        start..end
    }
}

/// What the view scan needs from the analyser: the detectors to run over a view.
pub trait Detect {
    fn detect(&self, text: &str, out: &mut Vec<Finding>);
}

/// Runs `d` over every view of `text` that would differ from it, appending to `out` what it
/// finds there and not already in `out[from..]` (same kind on an overlapping span).
/// `rot13_hint`: the trigger pass saw a ROT13 anchor.
pub fn scan_views(
    text: &str,
    rot13_hint: bool,
    d: &impl Detect,
    out: &mut Vec<Finding>,
    from: usize,
) {
    let mut found = Vec::new();
    if normalize::needed(text) {
        let v = normalize::view(text);
        d.detect(&v.text, &mut found);
        merge(&mut found, View::Normalized, |s| v.original(s), out, from);
    }
    if encoded::has_percent_escape(text) {
        let v = encoded::url_view(text);
        d.detect(&v.text, &mut found);
        merge(&mut found, View::Url, |s| v.original(s), out, from);
    }
    let mut decoded = 0;
    for run in encoded::runs(text.as_bytes()) {
        if decoded >= MAX_DECODED {
            break;
        }
        let Some((plain, view, part)) = encoded::decode_run(&text.as_bytes()[run.clone()]) else {
            continue;
        };
        decoded += plain.len();
        let seg = run.start + part.start..run.start + part.end;
        d.detect(&plain, &mut found);
        merge(&mut found, view, |_| seg.clone(), out, from);
    }
    if rot13_hint {
        let v = encoded::rot13(text);
        d.detect(&v, &mut found);
        merge(&mut found, View::Rot13, |s| s, out, from);
    }
}

/// Moves `found` into `out` with spans mapped to the original, skipping what `out[from..]`
/// already holds.
fn merge(
    found: &mut Vec<Finding>,
    view: View,
    to_original: impl Fn(Range<usize>) -> Range<usize>,
    out: &mut Vec<Finding>,
    from: usize,
) {
    for mut f in found.drain(..) {
        f.span = to_original(f.span);
        f.view = Some(view);
        let known = out[from..].iter().any(|g| {
            g.kind == f.kind
                && g.span.start < f.span.end.max(f.span.start + 1)
                && f.span.start < g.span.end.max(g.span.start + 1)
        });
        if !known {
            out.push(f);
        }
    }
}
