//! Response body framing (SSE events or JSON documents) feeding the dialect's accumulator.

use super::anthropic::MessagesAcc;
use super::decode::utf8_lossy;
use super::gemini::GeminiAcc;
use super::model::ResponseInfo;
use super::openai::{ChatAcc, ResponsesAcc};
use super::provider::{ApiKind, Dialect, Endpoint};
use super::sse::SseParser;

/// The accumulator for one response, chosen from the endpoint.
#[derive(Debug)]
pub enum ResponseAcc {
    Chat(ChatAcc),
    Responses(ResponsesAcc),
    Messages(MessagesAcc),
    Gemini(GeminiAcc),
}

impl ResponseAcc {
    /// The accumulator for `ep`'s dialect and API.
    pub fn for_endpoint(ep: &Endpoint) -> Self {
        match (ep.dialect, ep.api) {
            (Dialect::OpenAi, ApiKind::Responses) => Self::Responses(ResponsesAcc::default()),
            (Dialect::OpenAi, _) => Self::Chat(ChatAcc::default()),
            (Dialect::Anthropic, _) => Self::Messages(MessagesAcc::default()),
            (Dialect::Gemini, _) => Self::Gemini(GeminiAcc::default()),
        }
    }

    /// One SSE event's data, or one whole JSON document.
    pub fn document(&mut self, data: &str) {
        match self {
            Self::Chat(a) => a.document(data),
            Self::Responses(a) => a.document(data),
            Self::Messages(a) => a.document(data),
            Self::Gemini(a) => a.document(data),
        }
    }

    /// One SSE event's data: the dialects with a direct read of their common events try it
    /// first (a whole body never does: it is not one of those events).
    pub fn event(&mut self, data: &str) {
        match self {
            Self::Responses(a) => a.event(data),
            Self::Messages(a) => a.event(data),
            Self::Chat(_) | Self::Gemini(_) => self.document(data),
        }
    }

    /// What has been accumulated so far.
    pub fn info(&self) -> &ResponseInfo {
        match self {
            Self::Chat(a) => &a.info,
            Self::Responses(a) => &a.info,
            Self::Messages(a) => &a.info,
            Self::Gemini(a) => &a.info,
        }
    }

    /// The accumulated response.
    pub fn into_info(self) -> ResponseInfo {
        match self {
            Self::Chat(a) => a.info,
            Self::Responses(a) => a.info,
            Self::Messages(a) => a.info,
            Self::Gemini(a) => a.info,
        }
    }
}

#[derive(Debug)]
enum Framing {
    Sse(SseParser),
    Json(JsonSplitter),
}

/// Incremental response body parser: framing + accumulator.
#[derive(Debug)]
pub struct ResponseParser {
    framing: Framing,
    acc: ResponseAcc,
    /// SSE events or JSON documents handed to the accumulator.
    events: u64,
}

impl ResponseParser {
    /// A parser for `ep`; `content_type` selects SSE (`text/event-stream`) or JSON framing.
    /// `max_doc` bounds one JSON document or SSE line.
    pub fn new(ep: &Endpoint, content_type: Option<&str>, max_doc: usize) -> Self {
        const SSE: &[u8] = b"text/event-stream";
        let sse = content_type.is_some_and(|c| {
            c.as_bytes()
                .windows(SSE.len())
                .any(|w| w.eq_ignore_ascii_case(SSE))
        });
        Self {
            framing: if sse {
                Framing::Sse(SseParser::new(max_doc))
            } else {
                Framing::Json(JsonSplitter::new(max_doc))
            },
            acc: ResponseAcc::for_endpoint(ep),
            events: 0,
        }
    }

    /// True when the body is an event stream.
    pub fn is_sse(&self) -> bool {
        matches!(self.framing, Framing::Sse(_))
    }

    /// Feeds body bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        let (acc, events) = (&mut self.acc, &mut self.events);
        match &mut self.framing {
            Framing::Sse(p) => p.push(bytes, &mut |e| {
                *events += 1;
                acc.event(&e.data);
            }),
            Framing::Json(s) => s.push(bytes, &mut |d| {
                *events += 1;
                acc.document(d);
            }),
        }
    }

    /// SSE events or JSON documents parsed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Whether the response is whole: the provider's terminal event was seen, or the JSON
    /// body's top-level value closed.
    pub fn terminal(&self) -> bool {
        self.acc.info().terminal || matches!(&self.framing, Framing::Json(s) if s.complete)
    }

    /// Accumulated response so far.
    pub fn info(&self) -> &ResponseInfo {
        self.acc.info()
    }

    /// Ends the body; returns the response and whether some input was dropped as oversized.
    /// A JSON body whose top-level value closed counts as terminal.
    pub fn finish(mut self) -> (ResponseInfo, bool) {
        let acc = &mut self.acc;
        let (dropped, complete) = match &mut self.framing {
            Framing::Sse(p) => {
                p.finish(&mut |e| acc.event(&e.data));
                (p.dropped_lines() > 0, false)
            }
            Framing::Json(s) => (s.overflowed, s.complete),
        };
        let mut info = self.acc.into_info();
        info.terminal |= complete;
        (info, dropped)
    }
}

// Four independent lexer flags; a state enum would make the byte loop harder to follow.
#[allow(clippy::struct_excessive_bools)]
/// Splits a byte stream into JSON documents: a top-level object is one document; the elements of
/// a top-level array (Gemini's JSON stream) are one document each.
///
/// Only `"`, `\`, brackets and braces change the lexer state, so inside a document the splitter
/// jumps from one of them to the next (`memchr` inside strings) and copies nothing: a document
/// that arrives within one chunk is handed over as a slice of it; only one split across chunks
/// is gathered in `buf`.
#[derive(Debug)]
pub struct JsonSplitter {
    /// The part of the current document that arrived in earlier chunks.
    buf: Vec<u8>,
    depth: u32,
    /// Depth at which documents start: 0 for an object body, 1 inside a top-level array.
    base: Option<u32>,
    in_string: bool,
    escape: bool,
    max: usize,
    /// A document was larger than `max` and skipped.
    pub overflowed: bool,
    skipping: bool,
    /// The top-level value (object or array) closed: the body is whole.
    pub complete: bool,
}

impl JsonSplitter {
    /// A splitter skipping documents over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            depth: 0,
            base: None,
            in_string: false,
            escape: false,
            max,
            overflowed: false,
            skipping: false,
            complete: false,
        }
    }

    /// Feeds bytes; calls `on_doc` for each complete document.
    pub fn push(&mut self, bytes: &[u8], on_doc: &mut dyn FnMut(&str)) {
        let mut i = 0;
        // Where the current document starts in `bytes` (0 when it began in an earlier chunk).
        let mut doc_start = 0;
        while i < bytes.len() {
            let Some(base) = self.base_for(bytes[i]) else {
                i += 1;
                continue;
            };
            if self.depth > base {
                i += self.plain_run(&bytes[i..]);
                let Some(&b) = bytes.get(i) else {
                    break;
                };
                self.lex(b);
                i += 1;
                // Depth only falls on a bracket outside strings: the document is complete.
                if self.depth == base {
                    self.emit(&bytes[doc_start..i], on_doc);
                }
            } else {
                self.lex(bytes[i]);
                i += 1;
                if self.depth > base {
                    doc_start = i - 1;
                }
            }
        }
        if self.base.is_some_and(|base| self.depth > base) {
            self.keep(&bytes[doc_start..]);
        }
    }

    /// The document depth, fixed by the first non-whitespace byte (`None` before it).
    fn base_for(&mut self, b: u8) -> Option<u32> {
        if self.base.is_none() && !b.is_ascii_whitespace() {
            self.base = Some(u32::from(b == b'['));
        }
        self.base
    }

    /// How many leading bytes of `rest` leave the lexer state unchanged.
    fn plain_run(&self, rest: &[u8]) -> usize {
        if self.escape {
            0
        } else if self.in_string {
            memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len())
        } else {
            rest.iter()
                .position(|b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']'))
                .unwrap_or(rest.len())
        }
    }

    fn lex(&mut self, b: u8) {
        if self.in_string {
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_string = false;
            }
        } else {
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    self.complete |= self.depth == 0;
                }
                _ => {}
            }
        }
    }

    /// Hands over the document ending with `tail`, unless it outgrew `max`.
    fn emit(&mut self, tail: &[u8], on_doc: &mut dyn FnMut(&str)) {
        if self.skipping || self.buf.len() + tail.len() > self.max {
            self.overflowed = true;
        } else if self.buf.is_empty() {
            on_doc(&utf8_lossy(tail));
        } else {
            self.buf.extend_from_slice(tail);
            on_doc(&utf8_lossy(&self.buf));
        }
        self.buf.clear();
        self.skipping = false;
    }

    /// Keeps the start of a document that continues in the next chunk (dropped past `max`).
    fn keep(&mut self, part: &[u8]) {
        if self.skipping {
            return;
        }
        if self.buf.len() + part.len() > self.max {
            self.buf = Vec::new();
            self.skipping = true;
            self.overflowed = true;
            return;
        }
        self.buf.extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(input: &[u8], max: usize) -> Vec<String> {
        let mut s = JsonSplitter::new(max);
        let mut out = Vec::new();
        s.push(input, &mut |d| out.push(d.to_owned()));
        out
    }

    #[test]
    fn the_event_stream_content_type_is_recognised_in_any_case_and_with_parameters() {
        let ep = crate::llm::provider::detect("api.openai.com", "/v1/chat/completions", None, [])
            .unwrap();
        for (ct, sse) in [
            (Some("text/event-stream"), true),
            (Some("Text/Event-Stream; charset=utf-8"), true),
            (Some("application/json"), false),
            (Some("text/event"), false),
            (None, false),
        ] {
            let p = ResponseParser::new(&ep, ct, 1 << 10);
            assert_eq!(matches!(p.framing, Framing::Sse(_)), sse, "{ct:?}");
        }
    }

    #[test]
    fn object_and_array_streams() {
        assert_eq!(
            docs(br#" {"a":"}{","b":[1]} "#, 100),
            vec![r#"{"a":"}{","b":[1]}"#]
        );
        assert_eq!(
            docs(b"[{\"x\":\"\\\"]\"}\r\n,\r\n{\"y\":[{}]}\n]", 100),
            vec![r#"{"x":"\"]"}"#, r#"{"y":[{}]}"#]
        );
    }

    #[test]
    fn complete_once_the_top_level_value_closes() {
        for (body, cut) in [
            (&br#"{"a":{"b":"}"}}"#[..], 13),
            (&b"[{\"x\":1},\n{\"y\":\"]\"}]\n"[..], 19),
            // A stray closing bracket before any value closes nothing.
            (&b"}{\"a\":1}"[..], 5),
        ] {
            let mut s = JsonSplitter::new(100);
            s.push(&body[..cut], &mut |_| {});
            assert!(!s.complete, "{}", String::from_utf8_lossy(&body[..cut]));
            s.push(&body[cut..], &mut |_| {});
            assert!(s.complete, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn oversized_document_skipped_next_kept() {
        let out = docs(
            br#"[{"big":"0123456789012345678901234567890"},{"k":1}]"#,
            16,
        );
        assert_eq!(out, vec![r#"{"k":1}"#]);
    }

    /// The byte-at-a-time splitter this one replaced.
    #[allow(clippy::struct_excessive_bools)]
    struct Reference {
        buf: Vec<u8>,
        depth: u32,
        base: Option<u32>,
        in_string: bool,
        escape: bool,
        max: usize,
        overflowed: bool,
        skipping: bool,
    }

    impl Reference {
        fn byte(&mut self, b: u8, out: &mut Vec<String>) {
            let base = *self.base.get_or_insert_with(|| {
                if b.is_ascii_whitespace() {
                    u32::MAX
                } else {
                    u32::from(b == b'[')
                }
            });
            if base == u32::MAX {
                self.base = None;
                return;
            }
            let inside = self.depth > base;
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            if (inside || self.depth > base) && !self.skipping {
                if self.buf.len() >= self.max {
                    self.buf.clear();
                    self.skipping = true;
                    self.overflowed = true;
                } else {
                    self.buf.push(b);
                }
            }
            if inside && self.depth == base && !self.in_string {
                if !self.skipping {
                    out.push(String::from_utf8_lossy(&self.buf).into_owned());
                }
                self.buf.clear();
                self.skipping = false;
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        #[test]
        fn same_documents_as_the_byte_loop(
            input in "[ \\[\\]{}\"\\\\a:,1é\n]{0,80}",
            cuts in proptest::collection::vec(0usize..100, 0..6),
            max in 1usize..40,
        ) {
            let input = input.as_bytes();
            let mut r = Reference {
                buf: Vec::new(), depth: 0, base: None, in_string: false, escape: false,
                max, overflowed: false, skipping: false,
            };
            let mut want = Vec::new();
            for &b in input {
                r.byte(b, &mut want);
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            let mut s = JsonSplitter::new(max);
            let mut got = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([input.len()]) {
                s.push(&input[last..c], &mut |d| got.push(d.to_owned()));
                last = c;
            }
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(s.overflowed, r.overflowed);
        }
    }
}
