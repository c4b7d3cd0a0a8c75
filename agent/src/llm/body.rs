//! Response body framing (SSE events or JSON documents) feeding the dialect's accumulator.

use super::anthropic::MessagesAcc;
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
        let sse =
            content_type.is_some_and(|c| c.to_ascii_lowercase().contains("text/event-stream"));
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
                acc.document(&e.data);
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
                p.finish(&mut |e| acc.document(&e.data));
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
#[derive(Debug)]
pub struct JsonSplitter {
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
        for &b in bytes {
            self.byte(b, on_doc);
        }
    }

    fn byte(&mut self, b: u8, on_doc: &mut dyn FnMut(&str)) {
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
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    self.complete |= self.depth == 0;
                }
                _ => {}
            }
        }
        if inside || self.depth > base {
            self.keep(b);
        }
        if inside && self.depth == base && !self.in_string {
            if !self.skipping {
                on_doc(&String::from_utf8_lossy(&self.buf));
            }
            self.buf.clear();
            self.skipping = false;
        }
    }

    fn keep(&mut self, b: u8) {
        if self.skipping {
            return;
        }
        if self.buf.len() >= self.max {
            self.buf.clear();
            self.skipping = true;
            self.overflowed = true;
            return;
        }
        self.buf.push(b);
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
}
