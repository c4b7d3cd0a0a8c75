//! The chunk scores of one text, kept while its views are scanned. A view (the normalised
//! Unicode, say) differs from its text only around the characters it changed, and the learned
//! model cuts chunks from the start of the text and ends each at a space, so most of a view's
//! chunks are byte for byte chunks of the text: their scores are looked up here instead of
//! computed again (a view of a long prompt with one ellipsis in it scored every chunk twice).
//!
//! A memo lives for one text and its views, never longer: it tells nobody anything about
//! another client's text, so scans a client waits for may use it (unlike the chunk cache,
//! whose hits a client could time). A chunk is taken from the memo only when its bytes equal
//! a remembered chunk's, so the scores, and the findings, are those of scoring it.

use std::ops::Range;

/// The text a memo is for, and once it was scored, its chunks and their scores.
#[derive(Debug)]
pub struct TextMemo<'t> {
    text: &'t str,
    /// Ranges in the normalised text, with the chunk's score (`None`: no feature).
    chunks: Vec<(Range<usize>, Option<f64>)>,
    scored: bool,
    /// The text normalised, built when the first view is looked up (once for all views: a
    /// text may have many decoded segments, each scanned as a view).
    normalised: Option<Vec<u8>>,
    /// View chunks answered from the memo (for the tests).
    hits: usize,
}

/// What the learned model does with a memo for the text it scores.
pub(super) enum Use<'m, 't> {
    /// The memo's own text: remember each chunk's score.
    Record(&'m mut TextMemo<'t>),
    /// A view of it: look its chunks up among the text's.
    Look(&'m mut TextMemo<'t>),
    /// No memo, or a text it has not seen yet.
    None,
}

impl<'t> TextMemo<'t> {
    /// An empty memo for `text`; its chunks are remembered when the model scores `text`
    /// itself (the same slice), and looked up when it scores anything else after that.
    pub fn new(text: &'t str) -> Self {
        Self {
            text,
            chunks: Vec::new(),
            scored: false,
            normalised: None,
            hits: 0,
        }
    }

    /// How the model uses this memo when it scores `scanned`.
    pub(super) fn role<'m>(memo: Option<&'m mut Self>, scanned: &str) -> Use<'m, 't> {
        match memo {
            Some(m) if std::ptr::eq(m.text, scanned) && !m.scored => {
                m.scored = true;
                Use::Record(m)
            }
            Some(m) if m.scored => Use::Look(m),
            _ => Use::None,
        }
    }

    pub(super) fn remember(&mut self, range: Range<usize>, score: Option<f64>) {
        self.chunks.push((range, score));
    }

    /// The score of `chunk` (a normalised chunk of a view): a remembered chunk's whose bytes
    /// are the same, else `score()` (the shape of the chunk cache's lookup).
    pub(super) fn score(
        &mut self,
        chunk: &[u8],
        score: impl FnOnce() -> Option<f64>,
    ) -> Option<f64> {
        // A chunk as long as none of the text's (a short decoded segment, say) is not looked
        // for: the text is normalised only once a chunk might match.
        if !self.chunks.iter().any(|(r, _)| r.len() == chunk.len()) {
            return score();
        }
        let text = self.text;
        let earlier = self.normalised.get_or_insert_with(|| {
            let mut norm = Vec::new();
            super::hashing::normalise_into(text.as_bytes(), &mut norm);
            norm
        });
        let found = self
            .chunks
            .iter()
            .find(|(r, _)| r.len() == chunk.len() && earlier.get(r.clone()) == Some(chunk))
            .map(|&(_, v)| v);
        match found {
            Some(v) => {
                self.hits += 1;
                v
            }
            None => score(),
        }
    }

    /// View chunks answered from the memo so far.
    pub fn hits(&self) -> usize {
        self.hits
    }
}
