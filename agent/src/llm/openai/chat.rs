//! Chat completions, legacy completions and embeddings: one chunk model serves whole bodies
//! and stream chunks (`delta` or `message`); tool calls are assembled by their stream index.
//!
//! A stream repeats its id and model in every chunk and carries its text a few bytes at a
//! time: the model borrows every string it can from the document (a string with escapes is
//! the only one copied), so a chunk costs one parse and no allocation per field.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::OaUsage;
use super::chunk_scan::{self, Scanned};
use crate::llm::{
    borrowed::Str,
    model::{ResponseInfo, ToolCall, content_text, error_message},
};

/// A chat / completions / embeddings response body or stream chunk.
///
/// Every field has its own default instead of one for the whole struct: a struct-wide default
/// builds the whole (large) value first and moves it field by field. Either way a member
/// missing from the object (or an element missing from an array, which serde also reads as
/// a struct, on both paths) takes its type's default.
#[derive(Debug, Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    model: Option<Str<'a>>,
    #[serde(borrow, default)]
    choices: Choices<'a>,
    /// Boxed, like a choice's message: a stream chunk is moved by value several times on its
    /// way out of serde, and a response has dozens of chunks (inline, the moves were the
    /// largest cost of a streamed response's analysis). Usage comes once per stream.
    #[serde(default)]
    usage: Option<Box<OaUsage>>,
    /// Whether the document has an `error` member (whatever its value): such documents take
    /// the general path, which reads the error out of the whole value.
    #[serde(deserialize_with = "present", default)]
    error: bool,
}

#[derive(Debug, Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    delta: Option<Box<Message<'a>>>,
    #[serde(borrow, default)]
    message: Option<Box<Message<'a>>>,
    /// Legacy completions.
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Str<'a>>,
}

/// The choices of index 0, in document order (the others are the further completions of a
/// request with `n` > 1, which the trace does not keep). Every element is still parsed, so a
/// malformed one fails the document as before; the usual single choice is held without a
/// vector, so a stream chunk allocates nothing for it.
#[derive(Debug, Default)]
struct Choices<'a> {
    first: Option<Choice<'a>>,
    more: Vec<Choice<'a>>,
}

impl<'a> IntoIterator for Choices<'a> {
    type Item = Choice<'a>;
    type IntoIter =
        std::iter::Chain<std::option::IntoIter<Choice<'a>>, std::vec::IntoIter<Choice<'a>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.more)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ChoicesVisitor(std::marker::PhantomData))
    }
}

struct ChoicesVisitor<'a>(std::marker::PhantomData<Choices<'a>>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for ChoicesVisitor<'a> {
    type Value = Choices<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence of choices")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Choices::default();
        while let Some(c) = seq.next_element::<Choice<'a>>()? {
            if c.index != 0 {
                continue;
            }
            if out.first.is_none() {
                out.first = Some(c);
            } else {
                out.more.push(c);
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    /// DeepSeek / OpenRouter style reasoning deltas.
    #[serde(borrow, default)]
    reasoning_content: Option<Str<'a>>,
    #[serde(borrow, default)]
    reasoning: Option<Str<'a>>,
    #[serde(borrow, default)]
    refusal: Option<Str<'a>>,
    #[serde(borrow, default)]
    tool_calls: Vec<CallDelta<'a>>,
}

#[derive(Debug, Deserialize)]
struct CallDelta<'a> {
    #[serde(default)]
    index: Option<usize>,
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    function: Option<FnDelta<'a>>,
}

#[derive(Debug, Deserialize)]
struct FnDelta<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    arguments: Option<Str<'a>>,
}

/// A message's `content`: almost always a string (borrowed), otherwise (parts, null, …) the
/// value, read as the general path reads it.
#[derive(Debug)]
enum Content<'a> {
    Text(Cow<'a, str>),
    Other(Value),
}

impl Content<'_> {
    fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Text(t) => Cow::Borrowed(t),
            Self::Other(v) => content_text(v),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> serde::de::Visitor<'de> for ContentVisitor {
    type Value = Content<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("message content")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(s)))
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Content::Other(Value::Bool(b)))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(Content::Other(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Content::Other(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        // As `Value` reads it: a number it cannot hold is null.
        Ok(Content::Other(
            serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Content::Other(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Content::Other(Value::Null))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Content::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Content::Other)
    }
}

/// Deserializes any value as `true`: the member is there (a missing one defaults to `false`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// Accumulator for chat completions, legacy completions and embeddings.
#[derive(Debug, Default)]
pub struct ChatAcc {
    pub info: ResponseInfo,
    /// Stream tool-call index → position in `info.tool_calls`.
    call_slots: Vec<(usize, usize)>,
    /// The stream's chunk envelope, for the scan to go past.
    envelope: chunk_scan::Envelope,
}

impl ChatAcc {
    /// One stream event's `data` or a whole body.
    pub fn document(&mut self, data: &str) {
        if data.trim() == "[DONE]" {
            self.info.terminal = true;
            return;
        }
        if !data.trim_start().starts_with('{') {
            return self.general(data);
        }
        // The common stream chunk is scanned directly (see `chunk_scan`); whatever the
        // scan leaves takes the typed read, exactly as without it.
        let mut s = Scanned::default();
        if chunk_scan::scan(data, &mut s, &mut self.envelope).is_some() {
            return self.scanned(s);
        }
        self.typed(data);
    }

    /// The typed read alone, without the scan (to check that both read alike).
    #[cfg(any(test, fuzzing))]
    pub fn document_without_scan(&mut self, data: &str) {
        if data.trim() == "[DONE]" {
            self.info.terminal = true;
        } else if data.trim_start().starts_with('{') {
            self.typed(data);
        } else {
            self.general(data);
        }
    }

    /// The common document parses straight into its model; building a generic value
    /// first (a map per object, a string per key) cost more than the rest of the response
    /// analysis. Anything unusual (an error member, a field of an unexpected type, a
    /// duplicate key) takes the general path, which decides as before.
    fn typed(&mut self, data: &str) {
        match serde_json::from_str::<Chunk>(data) {
            Ok(chunk) if !chunk.error => self.chunk(chunk),
            _ => self.general(data),
        }
    }

    /// What [`Self::chunk`] does with the same document, from the scan.
    fn scanned(&mut self, s: Scanned<'_>) {
        self.info.set_id(s.id.as_deref());
        self.info.set_model(s.model.as_deref());
        if let Some(u) = s.usage {
            self.info.usage = u.into_usage();
        }
        let Some(c) = s.choice else {
            return;
        };
        if let Some(t) = &c.text {
            self.info.push_text(t);
        }
        if let Some(m) = c.message {
            if let Some(content) = &m.content {
                self.info.push_text(content);
            }
            if let Some(r) = &m.refusal {
                self.info.push_text(r);
            }
            if let Some(r) = m.reasoning_content.as_deref().or(m.reasoning.as_deref()) {
                self.info.push_reasoning(r);
            }
            for (i, d) in m.tool_calls.iter().enumerate() {
                self.call(
                    if c.whole { i } else { d.index.unwrap_or(i) },
                    d.id.as_deref(),
                    d.name.as_deref(),
                    d.arguments.as_deref(),
                );
            }
        }
        if let Some(r) = c.finish_reason {
            self.info.finish_reason = Some(r.into_owned());
        }
    }

    /// The general path: the document as a value, its error, then its model.
    fn general(&mut self, data: &str) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            self.info.parse_errors += 1;
            return;
        };
        if let Some(e) = error_message(&v) {
            // The provider ends the stream after an error event.
            self.info.error = Some(e);
            self.info.terminal = true;
            return;
        }
        let Ok(chunk) = Chunk::deserialize(&v) else {
            self.info.parse_errors += 1;
            return;
        };
        self.chunk(chunk);
    }

    fn chunk(&mut self, chunk: Chunk<'_>) {
        self.info.set_id(chunk.id.as_deref());
        self.info.set_model(chunk.model.as_deref());
        if let Some(u) = chunk.usage {
            self.info.usage = (*u).into_usage();
        }
        for c in chunk.choices {
            self.choice(c);
        }
    }

    fn choice(&mut self, c: Choice<'_>) {
        if let Some(t) = &c.text {
            self.info.push_text(t);
        }
        let whole = c.message.is_some();
        if let Some(m) = c.delta.or(c.message) {
            if let Some(content) = &m.content {
                self.info.push_text(&content.text());
            }
            if let Some(r) = m.refusal.as_deref() {
                self.info.push_text(r);
            }
            if let Some(r) = m.reasoning_content.as_deref().or(m.reasoning.as_deref()) {
                self.info.push_reasoning(r);
            }
            for (i, d) in m.tool_calls.into_iter().enumerate() {
                let (name, arguments) = d.function.map_or((None, None), |f| (f.name, f.arguments));
                self.call(
                    if whole { i } else { d.index.unwrap_or(i) },
                    d.id.as_deref(),
                    name.as_deref(),
                    arguments.as_deref(),
                );
            }
        }
        if let Some(r) = c.finish_reason {
            self.info.finish_reason = Some(r.into_owned());
        }
    }

    /// A tool call, or a stream's piece of one, at `index`.
    fn call(
        &mut self,
        index: usize,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
    ) {
        let slot = if let Some((_, s)) = self.call_slots.iter().find(|(i, _)| *i == index) {
            *s
        } else {
            self.info.tool_calls.push(ToolCall::default());
            let s = self.info.tool_calls.len() - 1;
            self.call_slots.push((index, s));
            s
        };
        let call = &mut self.info.tool_calls[slot];
        if let Some(id) = id {
            call.id = Some(id.to_owned());
        }
        if let Some(n) = name {
            call.name.push_str(n);
        }
        if let Some(a) = arguments {
            call.arguments.push_str(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_deltas_interleaved() {
        let mut a = ChatAcc::default();
        for d in [
            r#"{"id":"x","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"b","function":{"name":"g","arguments":"{\"y"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"x\":1}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\":2}"}}]},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ] {
            a.document(d);
        }
        let calls: Vec<_> = a
            .info
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(calls, vec![("f", "{\"x\":1}"), ("g", "{\"y\":2}")]);
        assert_eq!(a.info.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(a.info.parse_errors, 0);
    }

    #[test]
    fn a_chunk_borrows_its_strings_from_the_document() {
        let doc = r#"{"id":"x","model":"m","choices":[{"index":0,"text":"t","delta":{"content":"c","refusal":"r","reasoning":"why","tool_calls":[{"id":"call","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}]}"#;
        let chunk: Chunk = serde_json::from_str(doc).expect("parses");
        let borrowed = |s: &Option<Str>| matches!(s, Some(Str(Cow::Borrowed(_))));
        assert!(borrowed(&chunk.id) && borrowed(&chunk.model));
        let choice = chunk.choices.into_iter().next().expect("one choice");
        assert!(borrowed(&choice.text) && borrowed(&choice.finish_reason));
        let delta = choice.delta.expect("delta");
        assert!(matches!(
            delta.content,
            Some(Content::Text(Cow::Borrowed(_)))
        ));
        assert!(borrowed(&delta.refusal) && borrowed(&delta.reasoning));
        let call = &delta.tool_calls[0];
        let function = call.function.as_ref().expect("function");
        assert!(borrowed(&call.id) && borrowed(&function.name) && borrowed(&function.arguments));
        // A string with an escape is the one that cannot be borrowed.
        let chunk: Chunk = serde_json::from_str(r#"{"id":"a\nb"}"#).expect("parses");
        assert!(matches!(chunk.id, Some(Str(Cow::Owned(ref s))) if s == "a\nb"));
    }

    #[test]
    fn the_direct_parse_decides_as_the_general_path() {
        let docs = [
            r#"{"id":"x","model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}"#,
            r#"{"choices":[{"index":0,"message":{"content":[{"type":"text","text":"a"},"b"]},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":2}}}"#,
            r#"{"error":null}"#,
            r#"{"error":{"message":"slow down","type":"rate_limit"},"choices":[]}"#,
            r#"{"choices":[{"index":1,"text":"other choice"}],"id":7}"#,
            r#"{"id":"a","id":"b","choices":[{"index":0,"text":"dup"}]}"#,
            r#"["id","model"]"#,
            r#"{"choices":[{"index":0,"delta":{"content":"cut"#,
            "  {\"model\":\"spaced\",\"choices\":[]}",
        ];
        for d in docs {
            let (mut direct, mut general) = (ChatAcc::default(), ChatAcc::default());
            direct.document(d);
            general.general(d);
            assert_eq!(direct.info, general.info, "{d}");
        }
    }
}

/// The scan and the typed read must agree on every document, whichever reads it.
#[cfg(test)]
mod scan_equivalence_tests {
    use super::ChatAcc;
    use super::chunk_scan::{self, Envelope, Scanned};
    use proptest::prelude::*;

    /// Well-formed values of the kinds the members take.
    const VALID: &[&str] = &[
        "\"abc\"",
        "\"\"",
        "\"é ✓\"",
        "\"stop\"",
        "null",
        "true",
        "false",
        "0",
        "-0",
        "7",
        "-1.5e+3",
        "[]",
        "{}",
        "[1,{\"a\":[null]}]",
        "{\"a\":\"b\",\"c\":{}}",
    ];

    /// Odd values: escapes (which the scan decodes) and malformed ones (which fail both).
    const ODD: &[&str] = &[
        "\"a\\\"b\"",
        "\"line\\nnext\"",
        "\"\\u00e9\"",
        "\"a\u{1}b\"",
        "tru",
        "00",
        "1.",
        "1e",
        "-",
        "[1,]",
        "{\"a\"}",
        "\"open",
    ];

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => proptest::sample::select(VALID),
            1 => proptest::sample::select(ODD),
        ]
        .prop_map(str::to_owned)
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            20 => Just(""),
            2 => Just(" "),
            1 => Just("\n\t"),
            1 => Just("\u{a0}"),
        ]
    }

    fn object(members: Vec<(String, String)>, pad: &str) -> String {
        let inner: Vec<String> = members
            .into_iter()
            .map(|(k, v)| format!("{pad}\"{k}\"{pad}:{pad}{v}{pad}"))
            .collect();
        format!("{{{}}}", inner.join(","))
    }

    /// Strings plain and escaped, short and longer than the scan's byte-at-a-time head (with
    /// an escape on either side of it), and null.
    const TEXTS: &[&str] = &[
        "\"abc\"",
        "\"stop\"",
        "\"é ✓\"",
        "\"\"",
        "null",
        "\"a\\nb\\t\\\"q\\\" \\\\ \\/\"",
        "\"\\u00e9\\u20AC\\ud83d\\ude00\"",
        "\"a plain string of more than thirty-two bytes, é ✓\"",
        "\"thirty-one bytes of plain text \\n then more after the escape\"",
        "\"thirty-three bytes of plain text \\\" and a quote after it\"",
    ];

    /// Strings both reads refuse: a lone surrogate, an unknown escape, a bad hex digit, a raw
    /// control character (in the head and past it).
    const BAD_TEXTS: &[&str] = &[
        "\"\\ud83d\"",
        "\"\\ude00\"",
        "\"\\x\"",
        "\"\\u00G0\"",
        "\"a\tb\"",
        "\"more than thirty-two bytes before a raw\u{1} control\"",
    ];

    /// A string or null, the type most known members take; now and then a bad one.
    fn text() -> BoxedStrategy<String> {
        prop_oneof![
            25 => proptest::sample::select(TEXTS),
            1 => proptest::sample::select(BAD_TEXTS),
        ]
        .prop_map(str::to_owned)
        .boxed()
    }

    /// `key` and a value: mostly of the type the typed read expects there, sometimes any.
    fn member(key: &'static str) -> BoxedStrategy<(String, String)> {
        let typed = match key {
            "choices" => prop_oneof![
                1 => Just(Vec::new()).boxed(),
                6 => choice().prop_map(|c| vec![c]).boxed(),
                1 => proptest::collection::vec(choice(), 2..3).boxed(),
            ]
            .prop_map(|c| format!("[{}]", c.join(",")))
            .boxed(),
            "delta" | "message" => message(),
            "index" => proptest::sample::select(
                &[
                    "0", "0", "0", "0", "0", "0", "1", "0.0", "0e0", "-0", "null",
                ][..],
            )
            .prop_map(str::to_owned)
            .boxed(),
            "tool_calls" => prop_oneof![
                1 => Just(Vec::new()).boxed(),
                4 => proptest::collection::vec(call(), 1..3).boxed(),
            ]
            .prop_map(|c| format!("[{}]", c.join(",")))
            .boxed(),
            "function" => prop_oneof![
                4 => object_of(&["name", "arguments"], &["type"]),
                1 => Just("null".to_owned()).boxed(),
            ]
            .boxed(),
            "usage" => prop_oneof![1 => Just("null".to_owned()), 3 => usage()].boxed(),
            "prompt_tokens" | "completion_tokens" | "input_tokens" | "output_tokens"
            | "cached_tokens" | "reasoning_tokens" => count(),
            "prompt_tokens_details" | "input_tokens_details" => details("cached_tokens"),
            "completion_tokens_details" | "output_tokens_details" => details("reasoning_tokens"),
            _ => text(),
        };
        prop_oneof![30 => typed, 1 => token().boxed()]
            .prop_map(move |v| (key.to_owned(), v))
            .boxed()
    }

    /// Members in any order, now and then one twice or one of `rare` (members seldom seen,
    /// or that send the document to the typed read).
    fn members(
        keys: &'static [&'static str],
        rare: &'static [&'static str],
    ) -> impl Strategy<Value = Vec<(String, String)>> {
        let distinct = proptest::sample::subsequence(keys, 0..=keys.len())
            .prop_shuffle()
            .prop_flat_map(|ks| ks.into_iter().map(member).collect::<Vec<_>>());
        let all: Vec<&'static str> = keys.iter().chain(rare).copied().collect();
        let extra =
            proptest::option::weighted(0.15, proptest::sample::select(all).prop_flat_map(member));
        (distinct, extra, any::<proptest::sample::Index>()).prop_map(|(mut m, extra, at)| {
            if let Some(e) = extra {
                m.insert(at.index(m.len() + 1), e);
            }
            m
        })
    }

    /// An object of `members(keys, rare)`, padded alike around every member.
    fn object_of(
        keys: &'static [&'static str],
        rare: &'static [&'static str],
    ) -> BoxedStrategy<String> {
        (members(keys, rare), ws())
            .prop_map(|(m, pad)| object(m, pad))
            .boxed()
    }

    /// Counts in every form: the typed read takes only plain integers that fit.
    const COUNTS: &[&str] = &[
        "0",
        "41",
        "540",
        "null",
        "-3",
        "-0",
        "2.0",
        "1E2",
        "007",
        "\"5\"",
        "18446744073709551615",
        "18446744073709551616",
    ];

    fn count() -> BoxedStrategy<String> {
        proptest::sample::select(COUNTS)
            .prop_map(str::to_owned)
            .boxed()
    }

    fn details(key: &'static str) -> BoxedStrategy<String> {
        let keys: &'static [&'static str] = if key == "cached_tokens" {
            &["cached_tokens", "audio_tokens"]
        } else {
            &["reasoning_tokens", "audio_tokens"]
        };
        prop_oneof![
            4 => object_of(keys, keys),
            1 => token().boxed(),
        ]
        .boxed()
    }

    fn usage() -> BoxedStrategy<String> {
        let keys = &[
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        ];
        let rare = &[
            "input_tokens",
            "output_tokens",
            "input_tokens_details",
            "output_tokens_details",
        ];
        object_of(keys, rare)
    }

    fn message() -> BoxedStrategy<String> {
        let keys = &[
            "content",
            "refusal",
            "reasoning",
            "reasoning_content",
            "role",
            "tool_calls",
        ];
        object_of(keys, &[])
    }

    /// A tool call or a piece of one: its index mostly a plain one (a stream's calls are
    /// numbered by it), its members in any order.
    fn call() -> BoxedStrategy<String> {
        let index = prop_oneof![
            6 => proptest::sample::select(&["0", "1", "2", "null"][..]),
            1 => proptest::sample::select(&["-1", "1.0", "01"][..]),
        ]
        .prop_map(|v| ("index".to_owned(), v.to_owned()));
        (
            proptest::option::of(index),
            proptest::option::of(member("id")),
            proptest::option::of(member("function")),
            proptest::option::weighted(0.3, member("type")),
        )
            .prop_map(|(a, b, c, d)| [a, b, c, d].into_iter().flatten().collect::<Vec<_>>())
            .prop_shuffle()
            .prop_map(|m| object(m, ""))
            .boxed()
    }

    fn choice() -> BoxedStrategy<String> {
        let keys = &[
            "index",
            "delta",
            "message",
            "text",
            "finish_reason",
            "logprobs",
        ];
        object_of(keys, &[])
    }

    fn document() -> impl Strategy<Value = String> {
        let keys = &[
            "id", "model", "object", "created", "choices", "usage", "other",
        ];
        (
            members(keys, &["error", "\\u0069d"]),
            ws(),
            ws(),
            proptest::sample::select(&["", "", "", "", " ", "\n", "x", "}"][..]),
            any::<u8>(),
        )
            .prop_map(|(m, pad, lead, trail, cut)| {
                let doc = format!("{lead}{}{trail}", object(m, pad));
                // Now and then a document cut short, at a character boundary.
                if cut < 16 {
                    let mut at = doc.len() * usize::from(cut) / 16;
                    while !doc.is_char_boundary(at) {
                        at -= 1;
                    }
                    doc[..at].to_owned()
                } else {
                    doc
                }
            })
    }

    /// A stream's chunks: members before and after `choices` alike in every chunk (padded
    /// alike too), each chunk's own `choices`, and now and then members of its own at either end,
    /// so that the scan goes past known bytes from the second chunk on. The members around
    /// are sometimes ones that keep their bytes from being known (a decoded id, a usage), or
    /// a duplicate; a chunk sometimes has no `choices`.
    fn stream() -> impl Strategy<Value = Vec<String>> {
        let around = || {
            members(
                &["id", "model", "object", "created", "usage", "other"],
                &["\\u0069d", "error", "model", "choices"],
            )
        };
        let own = || proptest::option::weighted(0.2, members(&["usage", "model", "id"], &[]));
        let chunk = (
            own(),
            proptest::option::weighted(0.9, member("choices")),
            own(),
        );
        let chunks = proptest::collection::vec(chunk, 1..5);
        (around(), around(), chunks, ws()).prop_map(|(before, after, chunks, pad)| {
            chunks
                .into_iter()
                .map(|(lead, choices, tail)| {
                    let mut m = lead.unwrap_or_default();
                    m.extend(before.iter().cloned());
                    m.extend(choices);
                    m.extend(after.iter().cloned());
                    m.extend(tail.into_iter().flatten());
                    object(m, pad)
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn chunks_read_past_their_envelope_as_in_full(chunks in stream()) {
            let mut envelope = Envelope::default();
            let (mut with, mut without) = (ChatAcc::default(), ChatAcc::default());
            for d in &chunks {
                let (mut full, mut past) = (Scanned::default(), Scanned::default());
                let read = chunk_scan::scan(d, &mut full, &mut Envelope::default());
                prop_assert_eq!(read, chunk_scan::scan(d, &mut past, &mut envelope), "{}", d);
                // A document refused leaves no result to compare.
                if read.is_some() {
                    prop_assert_eq!(full, past, "{}", d);
                }
                with.document(d);
                without.document_without_scan(d);
            }
            prop_assert_eq!(with.info, without.info);
        }

        #[test]
        fn the_scan_reads_as_the_typed_read(docs in proptest::collection::vec(document(), 1..4)) {
            let (mut with, mut without) = (ChatAcc::default(), ChatAcc::default());
            for d in &docs {
                with.document(d);
                without.document_without_scan(d);
            }
            prop_assert_eq!(with.info, without.info);
        }
    }
}
