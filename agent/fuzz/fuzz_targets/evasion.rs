//! The evasion decoders and the learned detector's feature extractor on untrusted text: never a
//! panic, the base64 runs are a byte-by-byte scan's, every mapped span lies on character
//! boundaries of the text as written, and whatever a view finds is masked by its span.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::analysis::evasion::{encoded, normalize};
use llmtrace_agent::analysis::learned::memo::TextMemo;
use llmtrace_agent::analysis::learned::{LearnedDetector, hashing};
use llmtrace_agent::analysis::{Analyzer, Location, mask_findings};

static ANALYZER: LazyLock<Analyzer> = LazyLock::new(|| Analyzer::new(1 << 16));
/// Reports every text that has a feature, so each input exercises the span mapping; remembers
/// a few chunk scores, so long inputs go through the cache, and scores the normalised view
/// with the text's memo.
static LEARNED: LazyLock<LearnedDetector> =
    LazyLock::new(|| LearnedDetector::new(Some(1e-12), 16).expect("the embedded model parses"));

fuzz_target!(|data: &[u8]| {
    let runs = encoded::runs(data);
    assert_eq!(
        runs,
        naive_runs(data),
        "the block scanner and a byte-by-byte scan differ"
    );
    for run in runs {
        assert!(run.end <= data.len() && run.len() >= encoded::MIN_BASE64);
        let _ = encoded::decode_run(&data[run]);
    }
    let mut norm = Vec::new();
    hashing::normalise_into(data, &mut norm);
    assert!(norm.len() <= data.len());
    let mut words = hashing::WordHashes::default();
    for r in hashing::chunks(&norm, 64, 16) {
        assert!(r.start < r.end && r.end <= norm.len());
        let mut ids = Vec::new();
        hashing::chunk_buckets(&norm[r], 18, &mut ids, &mut words);
        assert!(ids.iter().all(|&b| b < 1 << 18));
        let _ = hashing::original_offset(data, norm.len() / 2);
    }
    let _ = encoded::base64(data);
    let _ = encoded::hex(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = encoded::rot13(text);
    for v in [normalize::view(text), encoded::url_view(text)] {
        for s in 0..=v.text.len() {
            if !v.text.is_char_boundary(s) {
                continue;
            }
            let span = v.original(s..v.text.len());
            assert!(span.start <= span.end && span.end <= text.len());
            assert!(text.is_char_boundary(span.start) && text.is_char_boundary(span.end));
        }
    }
    let scan = ANALYZER.scan_text(text, Location::Request);
    for f in &scan.findings {
        assert!(text.get(f.span.clone()).is_some(), "{f:?}");
    }
    let _ = mask_findings(text, &scan.findings);
    let mut learned = Vec::new();
    let mut memo = TextMemo::new(text);
    LEARNED.scan_with_memo(text, Location::Request, true, &mut memo, &mut learned);
    for f in &learned {
        assert!(text.get(f.span.clone()).is_some(), "{f:?}");
        assert!((0.0..=1.0).contains(&f.confidence));
    }
    let view = normalize::view(text).text;
    let mut seen = Vec::new();
    LEARNED.scan_with_memo(&view, Location::Request, true, &mut memo, &mut seen);
    for f in &seen {
        assert!(view.get(f.span.clone()).is_some(), "{f:?}");
        assert!((0.0..=1.0).contains(&f.confidence));
    }
});

/// The maximal runs of base64 bytes at least `MIN_BASE64` long, a byte at a time.
fn naive_runs(b: &[u8]) -> Vec<std::ops::Range<usize>> {
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_');
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let s = i;
        while i < b.len() && is_b64(b[i]) {
            i += 1;
        }
        if i - s >= encoded::MIN_BASE64 {
            out.push(s..i);
        }
        i += usize::from(i == s);
    }
    out
}
