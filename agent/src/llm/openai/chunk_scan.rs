//! A direct scan of the common chat stream chunk, beside the typed read.
//!
//! A streamed answer is dozens of small documents of one shape (an envelope repeating id and
//! model, one choice carrying a few bytes of text); their typed read was the largest cost of a
//! streamed response's analysis. This scan reads that shape in one pass over the bytes,
//! borrowing every string without escapes and decoding the others. It is sound, not
//! complete: it accepts a document only when it is valid JSON whose every member it
//! understands as the typed read does (one choice of index 0, counts as plain integers, no
//! duplicate known member, no lone surrogate, …) and answers `None` for anything else, which
//! then takes the typed read exactly as before. A whole (not streamed) completion has the same
//! shape and is read the same way.

use std::borrow::Cow;

use memchr::memchr2;
use serde_json::Value;

use super::OaUsage;

mod envelope;
pub(super) use envelope::Envelope;

/// Plain string bytes searched a word at a time ([`first_stop`]) before a vector search takes
/// over.
const SHORT: usize = 32;

/// The index of the first byte of `bytes` that ends a run of plain string bytes: a quote, a
/// backslash, or a control character (which JSON forbids raw in a string). Eight bytes per
/// step in a 64-bit word: a byte's top bit is set in each test where that byte matches, and
/// where a lower byte matched (a borrow); the lowest set bit is therefore always a true match.
fn first_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    // Bytes equal to zero, and (for `below`) bytes below `n`, flagged in their top bits.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let v = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        let quote = zero(v ^ (ONES * u64::from(b'"')));
        let backslash = zero(v ^ (ONES * u64::from(b'\\')));
        let m = (quote | backslash | below(v, 0x20)) & TOPS;
        if m != 0 {
            // Little-endian: the first byte is the lowest.
            return Some(at + (m.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let stop = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    words
        .remainder()
        .iter()
        .position(|&b| stop(b))
        .map(|p| at + p)
}

/// Values nested deeper than this in members the scan skips send the document to the typed
/// read (which has its own, larger limit).
const MAX_SKIP_DEPTH: u32 = 32;

/// What one chunk contributes, as the typed read would apply it.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Scanned<'a> {
    pub(super) id: Option<Cow<'a, str>>,
    pub(super) model: Option<Cow<'a, str>>,
    /// The usage object, when not null: its details hold only the count read from them.
    pub(super) usage: Option<Box<OaUsage>>,
    /// The choice of index 0, when the chunk has one.
    pub(super) choice: Option<ScannedChoice<'a>>,
}

#[derive(Debug, Default, PartialEq)]
pub(super) struct ScannedChoice<'a> {
    /// Legacy completions' `text`.
    pub(super) text: Option<Cow<'a, str>>,
    /// The `delta` (or `message`) member, when present and not null.
    pub(super) message: Option<ScannedMessage<'a>>,
    /// The member was `message` (a whole answer: its tool calls are numbered by position).
    pub(super) whole: bool,
    pub(super) finish_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, PartialEq)]
pub(super) struct ScannedMessage<'a> {
    /// A null `content` reads as no content, as in the typed read.
    pub(super) content: Option<Cow<'a, str>>,
    pub(super) refusal: Option<Cow<'a, str>>,
    pub(super) reasoning_content: Option<Cow<'a, str>>,
    pub(super) reasoning: Option<Cow<'a, str>>,
    pub(super) tool_calls: Vec<ScannedCall<'a>>,
}

/// A tool call or a stream's piece of one.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ScannedCall<'a> {
    pub(super) index: Option<usize>,
    pub(super) id: Option<Cow<'a, str>>,
    pub(super) name: Option<Cow<'a, str>>,
    pub(super) arguments: Option<Cow<'a, str>>,
}

/// Reads the chunk `doc` into `out` (a fresh one) when the scan understands all of it; `None`
/// sends it to the typed read. The parts are written where they end up, not built and moved
/// there (moving them cost as much as scanning). `envelope` is the stream's: the scan goes
/// past the bytes it knows from an earlier chunk, and remembers this chunk's (see
/// [`Envelope`]).
pub(super) fn scan<'a>(doc: &'a str, out: &mut Scanned<'a>, envelope: &mut Envelope) -> Option<()> {
    let mut c = Cursor {
        doc,
        i: 0,
        member_at: 0,
    };
    let mut seen = Seen::default();
    // Where the scan goes on past the known bytes before `choices`.
    let resume_at = envelope.before.pass(doc, 0, &mut seen, out);
    // Where `choices` begins and where the bytes after it begin, with the members read
    // before each: what this chunk leaves known.
    let (mut choices_at, mut after_choices) = (None, None);
    let known_after = &envelope.after;
    let member = |c: &mut Cursor<'a>, key: &str| {
        match key {
            "id" => c.once(&mut seen, ID)?.opt_str(&mut out.id)?,
            "model" => c.once(&mut seen, MODEL)?.opt_str(&mut out.model)?,
            "choices" => {
                choices_at = Some((c.member_at, seen.0));
                c.once(&mut seen, CHOICES)?.choices(&mut out.choice)?;
                c.ws();
                if c.peek() == Some(b',') {
                    let from = c.i + 1;
                    match known_after.pass(doc, from, &mut seen, out) {
                        // On the object's closing brace, which the known bytes end with.
                        Some(end) => c.i = end - 1,
                        None => after_choices = Some((from, seen.0)),
                    }
                }
            }
            "usage" => c.once(&mut seen, USAGE)?.usage(&mut out.usage)?,
            // An error is the general path's.
            "error" => return None,
            _ => c.skip(0)?,
        }
        Some(())
    };
    if let Some(at) = resume_at {
        c.i = at;
        c.members(member)?;
    } else {
        c.object(member)?;
    }
    let end = c.i;
    c.ws();
    if c.i != doc.len() {
        return None;
    }
    if let Some((at, entry)) = choices_at.filter(|_| resume_at.is_none()) {
        envelope.before.keep(doc, 0..at, 0, entry, out);
    }
    if let Some((from, entry)) = after_choices {
        envelope.after.keep(doc, from..end, entry, seen.0, out);
    }
    Some(())
}

/// The top-level members `Seen` tracks.
const ID: u32 = 0;
const MODEL: u32 = 1;
const CHOICES: u32 = 2;
const USAGE: u32 = 3;

/// Known members already read: a duplicate is the typed read's (it fails the document, and
/// the general path then takes the last one).
#[derive(Default)]
struct Seen(u32);

struct Cursor<'a> {
    doc: &'a str,
    i: usize,
    /// Where the member being read began: just after the comma before it, or 0 for an
    /// object's first member (and past known bytes, where they ended: never read there).
    /// Read by the top level as its member's closure is entered, to know where `choices`
    /// began.
    member_at: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.doc.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.i).copied()
    }

    /// Skips JSON whitespace (only these four bytes).
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.peek()? == b).then(|| self.i += 1)
    }

    /// Marks known member `bit` read; `None` when it was already.
    fn once(&mut self, seen: &mut Seen, bit: u32) -> Option<&mut Self> {
        if seen.0 & (1 << bit) != 0 {
            return None;
        }
        seen.0 |= 1 << bit;
        Some(self)
    }

    /// An object, calling `member` with each key and the cursor before its value.
    fn object(&mut self, member: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        self.member_at = 0;
        self.members(member)
    }

    /// An object's members from the one ahead (after its `{` or a comma) to its `}`.
    fn members(&mut self, mut member: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        loop {
            self.ws();
            let key = self.string()?;
            self.eat(b':')?;
            member(self, &key)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.member_at = self.i;
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array, calling `element` with the cursor before each element.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            element(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Whether the value ahead is `null` (then read); any other value is left for the
    /// caller. `None` at the end of the document or on a word that starts like it.
    fn null(&mut self) -> Option<bool> {
        self.ws();
        if self.peek()? != b'n' {
            return Some(false);
        }
        self.literal("null")?;
        Some(true)
    }

    /// A string: borrowed when it has no escapes, decoded otherwise.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.ws();
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i + 1;
        let end = self.plain_run(start)?;
        if self.bytes()[end] == b'"' {
            self.i = end + 1;
            // Both ends are ASCII, so both are character boundaries.
            return self.doc.get(start..end).map(Cow::Borrowed);
        }
        let mut out = String::with_capacity(end - start + 16);
        out.push_str(self.doc.get(start..end)?);
        let mut at = end;
        loop {
            // `at` is on a backslash.
            at = self.escape(at + 1, &mut out)?;
            let end = self.plain_run(at)?;
            out.push_str(self.doc.get(at..end)?);
            if self.bytes()[end] == b'"' {
                self.i = end + 1;
                return Some(Cow::Owned(out));
            }
            at = end;
        }
    }

    /// Where the run of plain string bytes from `from` ends (on a quote or a backslash);
    /// `None` when it holds a control character, which JSON forbids raw. The first
    /// [`SHORT`] bytes are read eight at a time in a word: most strings of a chunk (keys,
    /// ids, a few words of delta) end there, and a vector search's setup cost more than it
    /// saved on them (a fifth of a stream's parse time).
    fn plain_run(&self, from: usize) -> Option<usize> {
        let run = self.bytes().get(from..)?;
        let (head, rest) = run.split_at(run.len().min(SHORT));
        if let Some(p) = first_stop(head) {
            return (head[p] >= 0x20).then_some(from + p);
        }
        let len = memchr2(b'"', b'\\', rest)?;
        // The smallest byte, not `any`: a loop without an early exit is vectorised, and the
        // runs are short enough that stopping early saves nothing.
        let lowest = rest[..len].iter().copied().min();
        lowest
            .is_none_or(|b| b >= 0x20)
            .then_some(from + head.len() + len)
    }

    /// Decodes the escape whose letter is at `at` into `out`; where the string goes on. A
    /// lone surrogate, which the typed read refuses, gives up.
    fn escape(&self, at: usize, out: &mut String) -> Option<usize> {
        let b = self.bytes();
        let c = match *b.get(at)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(b.get(at + 1..at + 5)?)?;
                if !(0xD800..0xDC00).contains(&hi) {
                    out.push(char::from_u32(hi)?);
                    return Some(at + 5);
                }
                if b.get(at + 5..at + 7)? != b"\\u" {
                    return None;
                }
                let lo = hex4(b.get(at + 7..at + 11)?)?;
                if !(0xDC00..0xE000).contains(&lo) {
                    return None;
                }
                out.push(char::from_u32(
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00),
                )?);
                return Some(at + 11);
            }
            _ => return None,
        };
        out.push(c);
        Some(at + 1)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.bytes()
            .get(self.i..)?
            .starts_with(word.as_bytes())
            .then(|| self.i += word.len())
    }

    /// A string or null, into `out`. Here and below, `None` is the scan giving up.
    fn opt_str(&mut self, out: &mut Option<Cow<'a, str>>) -> Option<()> {
        *out = if self.null()? {
            None
        } else {
            Some(self.string()?)
        };
        Some(())
    }

    /// A count or null, into `out`: only a plain integer that fits (the typed read fails
    /// a negative or fractional count, and reads a long one as a float).
    fn opt_count(&mut self, out: &mut Option<u64>) -> Option<()> {
        *out = if self.null()? {
            None
        } else {
            Some(self.count()?)
        };
        Some(())
    }

    /// A plain non-negative integer that fits a `u64` (a larger one the typed read takes
    /// for a float). A zero ends the integer, so a leading zero, like a fraction, fails at
    /// the member's end.
    fn count(&mut self) -> Option<u64> {
        if self.peek()? == b'0' {
            self.i += 1;
            return Some(0);
        }
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        (self.i > start).then_some(n)
    }

    /// The usage object or null. The typed read keeps a details member as a value and
    /// reads one count from it (`num`): the scan keeps that count alone.
    fn usage(&mut self, into: &mut Option<Box<OaUsage>>) -> Option<()> {
        if self.null()? {
            *into = None;
            return Some(());
        }
        let u = into.insert(Box::default());
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "prompt_tokens" => c.once(&mut seen, 0)?.opt_count(&mut u.prompt_tokens)?,
                "completion_tokens" => c.once(&mut seen, 1)?.opt_count(&mut u.completion_tokens)?,
                "input_tokens" => c.once(&mut seen, 2)?.opt_count(&mut u.input_tokens)?,
                "output_tokens" => c.once(&mut seen, 3)?.opt_count(&mut u.output_tokens)?,
                "prompt_tokens_details" => {
                    let d = &mut u.prompt_tokens_details;
                    c.once(&mut seen, 4)?.details("cached_tokens", d)?;
                }
                "input_tokens_details" => {
                    let d = &mut u.input_tokens_details;
                    c.once(&mut seen, 5)?.details("cached_tokens", d)?;
                }
                "completion_tokens_details" => {
                    let d = &mut u.completion_tokens_details;
                    c.once(&mut seen, 6)?.details("reasoning_tokens", d)?;
                }
                "output_tokens_details" => {
                    let d = &mut u.output_tokens_details;
                    c.once(&mut seen, 7)?.details("reasoning_tokens", d)?;
                }
                _ => c.skip(0)?,
            }
            Some(())
        })
    }

    /// A details member: as a value holding only `key`'s count, when it is an object whose
    /// last `key` is a number that `num` reads as a count (`as_u64`: an integer that fits);
    /// none when `num` would find no count.
    fn details(&mut self, key: &str, into: &mut Option<Value>) -> Option<()> {
        self.ws();
        if self.peek()? != b'{' {
            *into = None;
            return self.skip(0);
        }
        let mut found = None;
        self.object(|c, k| {
            c.ws();
            let start = c.i;
            c.skip(1)?;
            if k == key {
                // A string, a fraction, a negative or a too-large number is no count.
                found = c.doc[start..c.i].parse::<u64>().ok();
            }
            Some(())
        })?;
        *into = found.map(|n| serde_json::json!({ key: n }));
        Some(())
    }

    /// The `choices` array: empty, or one object of index 0.
    fn choices(&mut self, out: &mut Option<ScannedChoice<'a>>) -> Option<()> {
        *out = None;
        self.array(|c| {
            // A second choice (even of index 0) is the typed read's.
            if out.is_some() {
                return None;
            }
            c.choice(out.insert(ScannedChoice::default()))
        })
    }

    fn choice(&mut self, out: &mut ScannedChoice<'a>) -> Option<()> {
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                // Another index is a further completion the typed read sorts out. A `0`
                // that is the start of a longer number fails at the member's end.
                "index" => {
                    c.once(&mut seen, 0)?.ws();
                    c.literal("0")?;
                }
                // One slot for both: a chunk with both (the typed read prefers the delta)
                // is left to the typed read as a duplicate.
                "delta" | "message" => {
                    c.once(&mut seen, 1)?.opt_message(&mut out.message)?;
                    out.whole = key == "message";
                }
                "text" => c.once(&mut seen, 3)?.opt_str(&mut out.text)?,
                "finish_reason" => c.once(&mut seen, 4)?.opt_str(&mut out.finish_reason)?,
                _ => c.skip(0)?,
            }
            Some(())
        })
    }

    /// A message object or null.
    fn opt_message(&mut self, into: &mut Option<ScannedMessage<'a>>) -> Option<()> {
        if self.null()? {
            *into = None;
            return Some(());
        }
        let out = into.insert(ScannedMessage::default());
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "content" => c.once(&mut seen, 0)?.opt_str(&mut out.content)?,
                "refusal" => c.once(&mut seen, 1)?.opt_str(&mut out.refusal)?,
                "reasoning_content" => {
                    c.once(&mut seen, 2)?.opt_str(&mut out.reasoning_content)?;
                }
                "reasoning" => c.once(&mut seen, 3)?.opt_str(&mut out.reasoning)?,
                "tool_calls" => c.once(&mut seen, 4)?.calls(&mut out.tool_calls)?,
                _ => c.skip(0)?,
            }
            Some(())
        })
    }

    /// A message's tool calls: an array of call objects.
    fn calls(&mut self, out: &mut Vec<ScannedCall<'a>>) -> Option<()> {
        self.array(|c| {
            out.push(ScannedCall::default());
            c.call(out.last_mut()?)
        })
    }

    fn call(&mut self, out: &mut ScannedCall<'a>) -> Option<()> {
        let mut seen = Seen::default();
        self.object(|c, key| {
            match key {
                "index" => {
                    if !c.once(&mut seen, 0)?.null()? {
                        out.index = Some(usize::try_from(c.count()?).ok()?);
                    }
                }
                "id" => c.once(&mut seen, 1)?.opt_str(&mut out.id)?,
                "function" => {
                    if c.once(&mut seen, 2)?.null()? {
                        return Some(());
                    }
                    let mut fn_seen = Seen::default();
                    c.object(|c, key| {
                        match key {
                            "name" => c.once(&mut fn_seen, 0)?.opt_str(&mut out.name)?,
                            "arguments" => {
                                c.once(&mut fn_seen, 1)?.opt_str(&mut out.arguments)?;
                            }
                            _ => c.skip(1)?,
                        }
                        Some(())
                    })?;
                }
                _ => c.skip(0)?,
            }
            Some(())
        })
    }

    /// Skips any JSON value, checking it as strictly as the typed read does.
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_SKIP_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|c, _| c.skip(depth + 1)),
            b'[' => self.array(|c| c.skip(depth + 1)),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => self.number(),
        }
    }

    /// A number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

/// Four hex digits (either case).
fn hex4(digits: &[u8]) -> Option<u32> {
    digits
        .iter()
        .try_fold(0, |n, &d| Some(n << 4 | char::from(d).to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan of `doc` alone, from scratch.
    pub(super) fn scan(doc: &str) -> Option<Scanned<'_>> {
        let mut out = Scanned::default();
        super::scan(doc, &mut out, &mut Envelope::default())?;
        Some(out)
    }

    #[test]
    fn the_word_at_a_time_stop_search_finds_the_first_stop() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        // Every byte value at every position of every length up to four words and a byte,
        // among fills beside a stop in value (0x21 and 0x23 the quote, 0x5b and 0x5d the
        // backslash), a control byte, a letter, and bytes with the top bit set.
        for len in 0..=33 {
            for at in 0..len {
                for c in 0..=u8::MAX {
                    for fill in [b'a', 0x01, 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xff] {
                        let mut b = vec![fill; len];
                        b[at] = c;
                        assert_eq!(first_stop(&b), naive(&b), "{b:?}");
                    }
                }
            }
        }
        assert_eq!(first_stop(b""), None);
    }

    #[test]
    fn reads_the_common_stream_chunk() {
        let doc = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#;
        let s = scan(doc).expect("scanned");
        assert_eq!(s.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(s.model.as_deref(), Some("gpt-4o-mini"));
        let choice = s.choice.expect("a choice");
        let content = choice.message.expect("delta").content;
        assert!(
            matches!(content, Some(Cow::Borrowed("Hello"))),
            "{content:?}"
        );
        assert_eq!(choice.finish_reason, None);
    }

    #[test]
    fn reads_a_whole_completion_with_its_usage() {
        let doc = r#"{"id":"chatcmpl-2","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":41,"completion_tokens":540,"total_tokens":581,"prompt_tokens_details":{"cached_tokens":7,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":"x","accepted_prediction_tokens":0}}}"#;
        let s = scan(doc).expect("scanned");
        let usage = s.usage.expect("usage").into_usage();
        assert_eq!(
            (
                usage.input,
                usage.output,
                usage.cached_input,
                usage.reasoning
            ),
            (Some(41), Some(540), Some(7), None)
        );
        let choice = s.choice.expect("a choice");
        assert_eq!(
            choice.message.expect("message").content.as_deref(),
            Some("Hi")
        );
        assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn skips_nested_members_it_does_not_use() {
        let doc = r#" {"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],"choices":[{"index":0,"delta":{"content":"x"},"content_filter_results":{"n":[1,-2.5e+3,true,false,null,[],{}]},"finish_reason":"stop"}]} "#;
        let choice = scan(doc).expect("scanned").choice.expect("a choice");
        assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn decodes_escapes_as_json_does() {
        let doc = r#"{"choices":[{"delta":{"content":"a\"b\\c\/d\b\f\n\r\t\u00e9\u20AC\ud83d\ude00!"}}],"\u0069d":"x"}"#;
        let s = scan(doc).expect("scanned");
        let content = s.choice.expect("a choice").message.expect("delta").content;
        assert_eq!(content.as_deref(), Some("a\"b\\c/d\u{8}\u{c}\n\r\té€😀!"));
        assert_eq!(s.id.as_deref(), Some("x"));
    }

    #[test]
    fn leaves_everything_unusual_to_the_typed_read() {
        for doc in [
            r#"{"id":"\ud83d"}"#,
            r#"{"id":"\ude00x"}"#,
            r#"{"id":"\ud83d\u0041"}"#,
            r#"{"id":"\x"}"#,
            r#"{"id":"\u12"}"#,
            r#"{"id":"\u12G4"}"#,
            r#"{"id":"a\"#,
            r#"{"id":"a","id":"b"}"#,
            r#"{"choices":[{"index":1,"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"index":0},{"index":0}]}"#,
            r#"{"choices":[{"index":0.0}]}"#,
            r#"{"choices":[{"index":00}]}"#,
            r#"{"choices":null}"#,
            r#"{"choices":[[0]]}"#,
            r#"{"choices":[{"delta":{"content":["part"]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[[0]]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":-1}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":["f"]}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"a","id":"b"}]}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"},"message":{"content":"b"}}]}"#,
            r#"{"usage":{"prompt_tokens":-1}}"#,
            r#"{"usage":{"prompt_tokens":1.0}}"#,
            r#"{"usage":{"prompt_tokens":01}}"#,
            r#"{"usage":{"prompt_tokens":18446744073709551616}}"#,
            r#"{"usage":{"prompt_tokens":"1"}}"#,
            r#"{"usage":{"prompt_tokens_details":{"cached_tokens":01}}}"#,
            r#"{"usage":[1]}"#,
            r#"{"error":null}"#,
            r#"{"id":5}"#,
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":-}"#,
            r#"{"x":tru}"#,
            "{\"x\":\"a\u{1}b\"}",
            r#"{"x":1,}"#,
            r#"{"x":1} x"#,
            r#"{"x":1"#,
            "\u{a0}{}",
        ] {
            assert_eq!(scan(doc), None, "{doc}");
        }
    }
}
