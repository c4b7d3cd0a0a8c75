//! The evasion decoders on untrusted text: never a panic, every mapped span lies on character
//! boundaries of the text as written, and whatever a view finds is masked by its span.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::analysis::evasion::{encoded, normalize};
use llmtrace_agent::analysis::{Analyzer, Location, mask_findings};

static ANALYZER: LazyLock<Analyzer> = LazyLock::new(|| Analyzer::new(1 << 16));

fuzz_target!(|data: &[u8]| {
    for run in encoded::runs(data) {
        assert!(run.end <= data.len() && run.len() >= encoded::MIN_BASE64);
        let _ = encoded::decode_run(&data[run]);
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
});
