//! openai_chat response parser, as SSE and as JSON, split at a fuzzer-chosen point: never panics and
//! gives the same result however the body is split. Each line, read as one stream chunk, gives
//! the same result with the direct chunk scan as with the typed read alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::llm::body::ResponseParser;
use llmtrace_agent::llm::openai::ChatAcc;
use llmtrace_agent::llm::provider::detect;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut) * body.len() / 255;
    let ep = detect("api.openai.com", "/v1/chat/completions", None, []).expect("known endpoint");
    for ct in ["text/event-stream", "application/json"] {
        let mut whole = ResponseParser::new(&ep, Some(ct), 1 << 16);
        whole.push(body);
        let mut split = ResponseParser::new(&ep, Some(ct), 1 << 16);
        split.push(&body[..cut]);
        split.push(&body[cut..]);
        assert_eq!(whole.finish(), split.finish());
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let (mut scanned, mut typed) = (ChatAcc::default(), ChatAcc::default());
        for line in text.lines() {
            scanned.document(line);
            typed.document_without_scan(line);
        }
        assert_eq!(scanned.info, typed.info);
    }
});
