//! SSE parser: never panics, and a split at any point gives the same events as one push.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::llm::sse::{SseParser, parse_all};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole = parse_all(body);
    let cut = usize::from(cut) * body.len() / 255;
    let mut p = SseParser::new(64);
    let mut bounded = Vec::new();
    p.push(body, &mut |e| bounded.push(e.clone()));
    let mut p = SseParser::default();
    let mut split = Vec::new();
    p.push(&body[..cut], &mut |e| split.push(e.clone()));
    p.push(&body[cut..], &mut |e| split.push(e.clone()));
    p.finish(&mut |e| split.push(e.clone()));
    assert_eq!(split, whole);
});
