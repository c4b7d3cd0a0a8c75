//! Property tests: accumulators give the same result however the stream is chunked, and tool
//! call arguments split into arbitrary deltas reassemble exactly.

// Test code: short names for the exchange under test and its parts read best here.
#![allow(
    clippy::many_single_char_names,
    clippy::format_push_string,
    clippy::float_cmp
)]

use proptest::prelude::*;

use super::body::ResponseParser;
use super::provider::detect;

fn parse(host: &str, path: &str, ct: &str, chunks: &[&[u8]]) -> super::ResponseInfo {
    let ep = detect(host, path, None, []).unwrap();
    let mut p = ResponseParser::new(&ep, Some(ct), 1 << 20);
    for c in chunks {
        p.push(c);
    }
    p.finish().0
}

fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for c in cuts {
        out.push(&data[last..c]);
        last = c;
    }
    out.push(&data[last..]);
    out
}

const FIXTURES: &[(&str, &str, &str, &[u8])] = &[
    (
        "api.openai.com",
        "/v1/chat/completions",
        "text/event-stream",
        include_bytes!("fixtures/openai_chat_stream.sse"),
    ),
    (
        "api.openai.com",
        "/v1/responses",
        "text/event-stream",
        include_bytes!("fixtures/openai_responses_stream.sse"),
    ),
    (
        "api.anthropic.com",
        "/v1/messages",
        "text/event-stream",
        include_bytes!("fixtures/anthropic_stream.sse"),
    ),
    (
        "generativelanguage.googleapis.com",
        "/v1beta/models/g:streamGenerateContent",
        "text/event-stream",
        include_bytes!("fixtures/gemini_stream.sse"),
    ),
    (
        "generativelanguage.googleapis.com",
        "/v1beta/models/g:streamGenerateContent",
        "application/json",
        include_bytes!("fixtures/gemini_stream_array.json"),
    ),
];

proptest! {
    #[test]
    fn any_chunking_gives_the_same_result(which in 0..FIXTURES.len(), cuts in proptest::collection::vec(any::<usize>(), 0..40)) {
        let (host, path, ct, data) = FIXTURES[which];
        let whole = parse(host, path, ct, &[data]);
        prop_assert_eq!(parse(host, path, ct, &split(data, &cuts)), whole);
    }

    #[test]
    fn openai_tool_args_reassemble(args in "[ -~]{0,60}", cuts in proptest::collection::vec(any::<usize>(), 0..8), text in "[a-zA-Z ]{0,30}") {
        let mut sse = String::new();
        let content = serde_json::json!({"choices":[{"index":0,"delta":{"content": text}}]});
        sse.push_str(&format!("data: {content}\n\n"));
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (args.len() + 1)).collect();
        cuts.sort_unstable();
        let mut last = 0;
        for (i, c) in cuts.iter().copied().chain([args.len()]).enumerate() {
            let f = if i == 0 { serde_json::json!({"name":"f","arguments": &args[last..c]}) } else { serde_json::json!({"arguments": &args[last..c]}) };
            let d = serde_json::json!({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":f}]}}]});
            sse.push_str(&format!("data: {d}\r\n\r\n"));
            last = c;
        }
        sse.push_str("data: [DONE]\n\n");
        let info = parse("api.openai.com", "/v1/chat/completions", "text/event-stream", &[sse.as_bytes()]);
        prop_assert_eq!(info.text, text);
        prop_assert_eq!(info.tool_calls.len(), 1);
        prop_assert_eq!(&info.tool_calls[0].arguments, &args);
    }

    #[test]
    fn anthropic_text_deltas_reassemble(parts in proptest::collection::vec("[^\u{0}]{0,20}", 0..10)) {
        let mut sse = String::from("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n");
        for p in &parts {
            let d = serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":p}});
            sse.push_str(&format!("event: content_block_delta\ndata: {d}\n\n"));
        }
        let info = parse("api.anthropic.com", "/v1/messages", "text/event-stream", &[sse.as_bytes()]);
        prop_assert_eq!(info.text, parts.concat());
        prop_assert_eq!(info.usage.input, Some(3));
    }

    #[test]
    fn sse_parser_never_panics_and_is_chunking_invariant(data in proptest::collection::vec(any::<u8>(), 0..400), cuts in proptest::collection::vec(any::<usize>(), 0..10)) {
        let whole = super::sse::parse_all(&data);
        let mut p = super::sse::SseParser::default();
        let mut out = Vec::new();
        for c in split(&data, &cuts) {
            p.push(c, &mut |e| out.push(e.clone()));
        }
        p.finish(&mut |e| out.push(e.clone()));
        prop_assert_eq!(out, whole);
    }
}
