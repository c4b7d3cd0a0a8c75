//! Incremental Server-Sent Events parser (WHATWG `text/event-stream` framing).
//!
//! Bytes may arrive in any chunking: an event, a line, a CRLF pair or a UTF-8 sequence may be split
//! across reads. Lines end with CRLF, LF or CR. Comment lines (`:` prefix) are skipped, `data`
//! fields on several lines are joined with `\n`. A line longer than the configured bound is dropped
//! (and counted) so a peer cannot make the parser buffer without limit.

use super::decode::utf8_lossy;

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; empty means the default type `message`.
    pub event: String,
    /// The joined `data:` lines.
    pub data: String,
    /// The last `id:` field seen in this event, if any.
    pub id: Option<String>,
}

/// Incremental parser state; feed it with [`SseParser::push`].
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF in the next chunk belongs to it.
    after_cr: bool,
    /// The current line went over `max_line`; ignore its bytes until the line ends.
    discarding: bool,
    max_line: usize,
    /// The event being read: handed out by reference and cleared, so its buffers serve the
    /// whole stream instead of one allocation per event.
    current: SseEvent,
    has_data: bool,
    dropped_lines: u64,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_LINE)
    }
}

impl SseParser {
    /// Default bound on one line (and so on one `data:` line of an event).
    pub const DEFAULT_MAX_LINE: usize = 1 << 20;

    /// A parser that drops lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            discarding: false,
            max_line: max_line.max(1),
            current: SseEvent::default(),
            has_data: false,
            dropped_lines: 0,
        }
    }

    /// Lines dropped because they were longer than the bound.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines
    }

    /// Feeds bytes; calls `on_event` for every event completed by them.
    pub fn push(&mut self, mut chunk: &[u8], on_event: &mut dyn FnMut(&SseEvent)) {
        if chunk.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while !chunk.is_empty() {
            let Some(pos) = memchr::memchr2(b'\n', b'\r', chunk) else {
                self.append(chunk);
                return;
            };
            let (line, is_cr) = (&chunk[..pos], chunk[pos] == b'\r');
            chunk = &chunk[pos + 1..];
            if is_cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            self.line_ends(line, on_event);
        }
    }

    /// A line ending with `rest`, the part of it in the current chunk. A line wholly in one
    /// chunk (most are) is read where it is, as [`Self::append`] and [`Self::end_line`] would
    /// read it, without copying it into `line` first.
    fn line_ends(&mut self, rest: &[u8], on_event: &mut dyn FnMut(&SseEvent)) {
        if !self.line.is_empty() || self.discarding {
            self.append(rest);
            return self.end_line(on_event);
        }
        if rest.len() > self.max_line {
            self.dropped_lines += 1;
        } else {
            self.read_line(rest, on_event);
        }
    }

    /// End of stream: a last line without terminator and an event without its blank line are
    /// dispatched (lenient, as the provider SDKs do).
    pub fn finish(&mut self, on_event: &mut dyn FnMut(&SseEvent)) {
        if !self.line.is_empty() || self.discarding {
            self.end_line(on_event);
        }
        self.dispatch(on_event);
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.discarding {
            return;
        }
        if self.line.len() + bytes.len() > self.max_line {
            self.line.clear();
            self.discarding = true;
            self.dropped_lines += 1;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self, on_event: &mut dyn FnMut(&SseEvent)) {
        if self.discarding {
            self.discarding = false;
            self.line.clear();
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.read_line(&line, on_event);
        self.line = line;
        self.line.clear();
    }

    /// A whole line: a blank one ends the event, any other is a field.
    fn read_line(&mut self, line: &[u8], on_event: &mut dyn FnMut(&SseEvent)) {
        if line.is_empty() {
            self.dispatch(on_event);
        } else {
            self.field(line);
        }
    }

    fn field(&mut self, line: &[u8]) {
        if line[0] == b':' {
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        let value = utf8_lossy(value);
        let ev = &mut self.current;
        match name {
            b"data" => {
                if self.has_data {
                    ev.data.push('\n');
                }
                ev.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => value.as_ref().clone_into(&mut ev.event),
            // An id containing NUL is ignored by the spec; the last one stays the stream's.
            b"id" if !value.contains('\0') => {
                value
                    .as_ref()
                    .clone_into(ev.id.get_or_insert_with(String::new));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(&SseEvent)) {
        if self.has_data {
            self.has_data = false;
            on_event(&self.current);
        }
        self.current.event.clear();
        self.current.data.clear();
    }
}

/// Parses a whole buffer (test and CLI convenience).
pub fn parse_all(bytes: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    let mut out = Vec::new();
    parser.push(bytes, &mut |e| out.push(e.clone()));
    parser.finish(&mut |e| out.push(e.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: None,
        }
    }

    #[test]
    fn line_endings_and_multiline_data() {
        let input = b": comment\r\nevent: a\r\ndata: one\rdata:two\n\ndata: x\n\n";
        assert_eq!(parse_all(input), vec![ev("a", "one\ntwo"), ev("", "x")]);
    }

    #[test]
    fn every_split_gives_same_events() {
        let input: &[u8] =
            b"event: e\r\ndata: h\xc3\xa9llo\r\n\r\n:c\rid: 7\rdata: a\r\rdata: b\n\n";
        let whole = parse_all(input);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].data, "héllo");
        assert_eq!(whole[1].id.as_deref(), Some("7"));
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let mut p = SseParser::default();
                let mut out = Vec::new();
                for part in [&input[..i], &input[i..j], &input[j..]] {
                    p.push(part, &mut |e| out.push(e.clone()));
                }
                p.finish(&mut |e| out.push(e.clone()));
                assert_eq!(out, whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn fixtures_split_at_every_byte_boundary() {
        let fixtures: [&[u8]; 7] = [
            include_bytes!("fixtures/openai_chat_stream.sse"),
            include_bytes!("fixtures/openai_chat_stream_nousage.sse"),
            include_bytes!("fixtures/openai_responses_stream.sse"),
            include_bytes!("fixtures/openai_completions_stream.sse"),
            include_bytes!("fixtures/anthropic_stream.sse"),
            include_bytes!("fixtures/gemini_stream.sse"),
            include_bytes!("fixtures/azure_chat_stream.sse"),
        ];
        for fx in fixtures {
            let whole = parse_all(fx);
            assert!(whole.len() >= 3);
            for i in 0..=fx.len() {
                let mut p = SseParser::default();
                let mut out = Vec::new();
                p.push(&fx[..i], &mut |e| out.push(e.clone()));
                p.push(&fx[i..], &mut |e| out.push(e.clone()));
                p.finish(&mut |e| out.push(e.clone()));
                assert_eq!(out, whole, "split at {i}");
            }
        }
    }

    #[test]
    fn overlong_line_dropped_and_parser_recovers() {
        let mut p = SseParser::new(16);
        let mut out = Vec::new();
        p.push(b"data: 0123456789abcdefghij\n", &mut |e| {
            out.push(e.clone());
        });
        p.push(b"\ndata: ok\n\n", &mut |e| out.push(e.clone()));
        assert_eq!(out, vec![ev("", "ok")]);
        assert_eq!(p.dropped_lines(), 1);
    }

    #[test]
    fn lines_at_and_over_the_bound_read_alike_whole_and_split() {
        // Lines of the bound's length and one more, read in place (whole) and gathered
        // across chunks (split at every pair of places).
        let input: &[u8] =
            b"data: 0123456789\ndata: 0123456789a\r\n\r\ndata: 0123456789a\rdata: x\n\n";
        let run = |parts: &[&[u8]]| {
            let mut p = SseParser::new(16);
            let mut out = Vec::new();
            for part in parts {
                p.push(part, &mut |e| out.push(e.clone()));
            }
            p.finish(&mut |e| out.push(e.clone()));
            (out, p.dropped_lines())
        };
        let whole = run(&[input]);
        assert_eq!(whole, (vec![ev("", "0123456789"), ev("", "x")], 2));
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let parts = [&input[..i], &input[i..j], &input[j..]];
                assert_eq!(run(&parts), whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn event_without_data_is_not_dispatched_and_field_without_colon() {
        assert_eq!(parse_all(b"event: ping\n\ndata\n\n"), vec![ev("", "")]);
    }

    #[test]
    fn unterminated_tail_is_flushed_on_finish() {
        assert_eq!(parse_all(b"data: [DONE]"), vec![ev("", "[DONE]")]);
    }
}
