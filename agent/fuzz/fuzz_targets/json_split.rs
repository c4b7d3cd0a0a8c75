//! JSON document splitter: never panics, chunking-invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::llm::body::JsonSplitter;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut) * body.len() / 255;
    let mut a = Vec::new();
    JsonSplitter::new(4096).push(body, &mut |d| a.push(d.to_owned()));
    let mut b = Vec::new();
    let mut s = JsonSplitter::new(4096);
    s.push(&body[..cut], &mut |d| b.push(d.to_owned()));
    s.push(&body[cut..], &mut |d| b.push(d.to_owned()));
    assert_eq!(a, b);
});
