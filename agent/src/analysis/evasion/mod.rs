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

/// A view of a text with, for each of its bytes, where in the text it came from: the start
/// in the original of the character the byte came from ([`Mapped::source`]).
///
/// Kept as pieces rather than a position per byte: most of a view is runs copied from the
/// text, and a per-byte map cost a store per byte of every view (and four bytes of memory
/// per byte) to serve the few lookups a finding needs.
#[derive(Debug, Default)]
pub struct Mapped {
    pub text: String,
    /// In view order: stretches where the view and the original advance together at each
    /// character's start. A byte maps to `original + (start of its character - view)`. A
    /// replacement character of another length ends the stretch it is in (all its bytes map
    /// to its source character's start), and what follows starts another.
    pieces: Vec<Piece>,
    original_len: u32,
}

/// Where a piece starts in the view and in the original.
#[derive(Debug, Clone, Copy)]
struct Piece {
    view: u32,
    original: u32,
}

/// A position as stored; texts scanned are far below 4 GiB (the analysis caps what it
/// reads), and in a larger one positions past it map to its end (arithmetic saturates).
fn stored(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

impl Mapped {
    fn with_capacity(n: usize) -> Self {
        Self {
            text: String::with_capacity(n),
            pieces: Vec::new(),
            original_len: 0,
        }
    }

    /// Appends the character `c`, which comes from the character at `from` in the original.
    fn push(&mut self, c: char, from: usize) {
        self.start_piece(from);
        self.text.push(c);
    }

    /// Appends `s`, unchanged, which starts at `from` in the original: each of its bytes maps
    /// to the start of its own character. A run at a time, instead of a character at a time.
    fn push_unchanged(&mut self, s: &str, from: usize) {
        if !s.is_empty() {
            self.start_piece(from);
            self.text.push_str(s);
        }
    }

    /// Makes what is appended next map from `from`: the last piece goes on when the text
    /// appended so far came from the original at the same distance, otherwise a new piece
    /// starts.
    fn start_piece(&mut self, from: usize) {
        let (view, from) = (stored(self.text.len()), stored(from));
        let continues = self
            .pieces
            .last()
            .is_some_and(|p| p.original.saturating_add(view - p.view) == from);
        if !continues {
            self.pieces.push(Piece {
                view,
                original: from,
            });
        }
    }

    fn finish(&mut self, original_len: usize) {
        self.original_len = stored(original_len);
    }

    /// The start in the original of the character view byte `i` came from (the original's
    /// length past the view's end).
    fn source(&self, i: usize) -> u32 {
        if i >= self.text.len() {
            return self.original_len;
        }
        // The last piece starting at or before `i` (the first starts at 0).
        let p = self.pieces[self.pieces.partition_point(|p| p.view as usize <= i) - 1];
        let start = p.view as usize;
        // Back to the start of the byte's character: a UTF-8 continuation byte (10xxxxxx)
        // belongs to the character before it; pieces start on characters.
        let b = self.text.as_bytes();
        let mut j = i;
        while j > start && b[j] & 0xC0 == 0x80 {
            j -= 1;
        }
        p.original.saturating_add(stored(j - start))
    }

    /// The span of the original covering the characters `span` of the view came from (with
    /// any dropped invisible characters between or right after them).
    pub fn original(&self, span: Range<usize>) -> Range<usize> {
        let len = self.text.len();
        let s = span.start.min(len);
        let e = span.end.clamp(s, len);
        let start = self.source(s) as usize;
        if e == s {
            return start..start;
        }
        // The end: where the next character of the original starts, past the bytes that came
        // from the same character as the span's last (the rest of it, or more characters of
        // its replacement: a few bytes).
        let last = self.source(e - 1);
        let end = (e..=len)
            .map(|k| self.source(k))
            .find(|&m| m > last)
            .unwrap_or(self.original_len);
        start..end as usize
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
