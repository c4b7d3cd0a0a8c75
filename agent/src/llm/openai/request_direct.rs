//! OpenAI-dialect request bodies read straight into a model of borrowed strings, beside the
//! general path ([`super::parse_request`], which reads a `serde_json::Value`): building the
//! value (a map per object, a string per member, every prompt copied) and then the prompt
//! from it was most of a request's parse.
//!
//! The direct read gives the general path's result or nothing: a member of a type the model
//! does not take, a duplicate member, or a prompt the general path would complete from the
//! whole document sends the body to the general path. Members the model does not name are
//! read as the general path reads them (numbers converted, strings checked), so a document
//! one path refuses the other refuses too.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer};

use crate::llm::borrowed::{Object, Str};
use crate::llm::model::{PromptBuilder, RequestInfo};

/// The request as the general path reads it, or `None` when only the general path can say
/// (see the module's note).
pub fn read_request(body: &str) -> Option<RequestInfo> {
    let Object(r) = serde_json::from_str::<Object<Request>>(body).ok()?;
    let mut p = PromptBuilder::default();
    let tools = r.tool_names();
    if let Some(i) = &r.instructions {
        p.add("system", i);
    }
    for (items, role) in [(&r.messages, ""), (&r.input, "user"), (&r.prompt, "user")] {
        match items {
            Some(Items::Text(text)) => p.add(role, text),
            Some(Items::List(list)) => {
                for item in list {
                    add_item(&mut p, item, role);
                }
            }
            None => {}
        }
    }
    // An empty or cut prompt is completed from every string of the document (and an empty
    // embeddings prompt is the input's JSON text): both need the value.
    if p.text.trim().is_empty() || p.truncated {
        return None;
    }
    let stream_options = r.stream_options.as_ref().map(|o| &o.0);
    Some(RequestInfo {
        model: r.model.map(Str::into_owned),
        stream: r.stream.unwrap_or(false),
        include_usage: stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        max_tokens: r
            .max_completion_tokens
            .or(r.max_tokens)
            .or(r.max_output_tokens),
        temperature: r.temperature,
        tools,
        prompt: p.text,
        prompt_truncated: false,
    })
}

/// The members the general path reads; the others are checked as it checks them.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    model: Option<Str<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<Object<StreamOptions>>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(borrow, default)]
    tools: Option<Vec<Object<Tool<'a>>>>,
    #[serde(borrow, default)]
    functions: Option<Vec<Object<Tool<'a>>>>,
    #[serde(borrow, default)]
    instructions: Option<Str<'a>>,
    #[serde(borrow, default)]
    messages: Option<Items<'a>>,
    #[serde(borrow, default)]
    input: Option<Items<'a>>,
    #[serde(borrow, default)]
    prompt: Option<Items<'a>>,
    #[serde(flatten)]
    _rest: Rest,
}

impl Request<'_> {
    /// Names of the tools offered: a tool's function name, else its name, else its type; a
    /// member present with another type than a string names nothing (the general path reads
    /// the first member present).
    fn tool_names(&self) -> Vec<String> {
        let tools = self.tools.iter().chain(&self.functions).flatten();
        tools
            .filter_map(|Object(t)| {
                let from_function = t.function.as_ref().and_then(|f| f.0.name.as_ref());
                from_function.or(t.name.as_ref()).or(t.kind.as_ref())
            })
            .map(|n| n.to_string())
            .collect()
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
    #[serde(flatten)]
    _rest: Rest,
}

/// An offered tool. Each name member, when present, must be a string: the general path stops
/// at the first one present, whatever its value.
#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow, default)]
    function: Option<Object<ToolFunction<'a>>>,
    #[serde(borrow, default, deserialize_with = "string")]
    name: Option<Str<'a>>,
    #[serde(borrow, default, rename = "type", deserialize_with = "string")]
    kind: Option<Str<'a>>,
    #[serde(flatten)]
    _rest: Rest,
}

#[derive(Deserialize)]
struct ToolFunction<'a> {
    #[serde(borrow, default, deserialize_with = "string")]
    name: Option<Str<'a>>,
    #[serde(flatten)]
    _rest: Rest,
}

/// `messages`, `input` or `prompt`: a string or a list of items (any other value the general
/// path ignores; here it sends the body there).
enum Items<'a> {
    Text(Cow<'a, str>),
    List(Vec<Item<'a>>),
}

/// An item: a string (a message of the list's default role) or an object.
enum Item<'a> {
    Text(Cow<'a, str>),
    Message(Box<Message<'a>>),
}

/// A chat message or a Responses input item.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Str<'a>>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    /// A `function_call_output` item's output.
    #[serde(borrow, default)]
    output: Option<Content<'a>>,
    /// A `function_call` item's name and arguments.
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default, deserialize_with = "string")]
    arguments: Option<Str<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<Object<Call<'a>>>>,
    #[serde(flatten)]
    _rest: Rest,
}

#[derive(Deserialize)]
struct Call<'a> {
    #[serde(borrow, default)]
    function: Option<Object<CallFunction<'a>>>,
    #[serde(flatten)]
    _rest: Rest,
}

#[derive(Deserialize)]
struct CallFunction<'a> {
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    /// Absent reads as empty; present, a string (the general path writes any other value
    /// out as JSON, null included).
    #[serde(borrow, default, deserialize_with = "string")]
    arguments: Option<Str<'a>>,
    #[serde(flatten)]
    _rest: Rest,
}

/// A message's `content` (or an item's `output`): a string or a list of parts; null reads as
/// absent (empty), any other value sends the body to the general path.
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

/// A part of a content list: a string or an object.
enum Part<'a> {
    Text(Cow<'a, str>),
    Object(PartObject<'a>),
}

#[derive(Deserialize)]
struct PartObject<'a> {
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
    /// A part's nested content: not read here (the general path reads it recursively).
    #[serde(default, rename = "content")]
    _content: Option<Refused>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(flatten)]
    _rest: Rest,
}

/// `item` added to the prompt as the general path adds it.
fn add_item(p: &mut PromptBuilder, item: &Item<'_>, default_role: &str) {
    let m = match item {
        Item::Text(text) => return p.add(default_role, text),
        Item::Message(m) => m,
    };
    match m.kind.as_deref().unwrap_or("message") {
        "function_call" => p.add(
            "assistant",
            &call_text(m.name.as_deref(), m.arguments.as_deref()),
        ),
        "function_call_output" => p.add("tool", &text_of(m.output.as_ref())),
        _ => {
            let role = m.role.as_deref().unwrap_or(default_role);
            p.add(role, &text_of(m.content.as_ref()));
            for Object(call) in m.tool_calls.iter().flatten() {
                let f = call.function.as_ref().map(|f| &f.0);
                p.add(
                    role,
                    &call_text(
                        f.and_then(|f| f.name.as_deref()),
                        f.and_then(|f| f.arguments.as_deref()),
                    ),
                );
            }
        }
    }
}

/// The text of a content member (absent or null: empty).
fn text_of<'c>(content: Option<&'c Content<'_>>) -> Cow<'c, str> {
    content.map_or(Cow::Borrowed(""), Content::text)
}

/// A tool call as the prompt shows it.
fn call_text(name: Option<&str>, args: Option<&str>) -> String {
    format!(
        "[tool_call {}({})]",
        name.unwrap_or("?"),
        args.unwrap_or_default()
    )
}

impl Content<'_> {
    /// The text of the content, parts one per line (an object part without text as its type
    /// in brackets).
    fn text(&self) -> Cow<'_, str> {
        let parts = match self {
            Self::Text(t) => return Cow::Borrowed(t),
            Self::Parts(parts) => parts,
        };
        let mut out = String::new();
        for part in parts {
            let piece = match part {
                Part::Text(t) => Cow::Borrowed(&**t),
                Part::Object(o) => match &o.text {
                    Some(t) => Cow::Borrowed(&**t),
                    None => Cow::Owned(format!("[{}]", o.kind.as_deref().unwrap_or("part"))),
                },
            };
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&piece);
        }
        Cow::Owned(out)
    }
}

/// A member that must be a string when present (null or another value sends the body to the
/// general path, which reads it otherwise).
fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Str<'de>>, D::Error> {
    Str::deserialize(d).map(Some)
}

/// The members a model does not name, read as the general path reads any value (through
/// `deserialize_any`: numbers converted, so one out of range fails, and strings decoded, so
/// a lone surrogate fails), none of them kept. `IgnoredAny` skips both unchecked.
struct Rest;

impl<'de> Deserialize<'de> for Rest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Checked).map(|_| Rest)
    }
}

/// Any value, read in full and dropped.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// A member the direct read does not take: any value but null fails it.
struct Refused;

impl<'de> Deserialize<'de> for Refused {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom("read by the general path"))
    }
}

/// A string (borrowed unless it has escapes) or a sequence of `T`, for the enums above.
struct TextOr<T>(PhantomData<T>);

/// What [`TextOr`] read.
enum TextOrSeq<'a, T> {
    Text(Cow<'a, str>),
    Seq(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for TextOr<T> {
    type Value = TextOrSeq<'de, T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or a list")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(TextOrSeq::Text(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(TextOrSeq::Text(Cow::Owned(s.to_owned())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(x) = seq.next_element()? {
            out.push(x);
        }
        Ok(TextOrSeq::Seq(out))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Items<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(TextOr::<Item<'a>>(PhantomData))? {
            TextOrSeq::Text(t) => Items::Text(t),
            TextOrSeq::Seq(items) => Items::List(items),
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(TextOr::<Part<'a>>(PhantomData))? {
            TextOrSeq::Text(t) => Content::Text(t),
            TextOrSeq::Seq(parts) => Content::Parts(parts),
        })
    }
}

/// A string or an object, read into `Text` or through `T`'s own model.
struct TextOrObject<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for TextOrObject<T> {
    type Value = Result<T, Cow<'de, str>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string or an object")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Err(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Err(Cow::Owned(s.to_owned())))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Ok)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Item<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(
            match d.deserialize_any(TextOrObject::<Message<'a>>(PhantomData))? {
                Ok(m) => Item::Message(Box::new(m)),
                Err(t) => Item::Text(t),
            },
        )
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Part<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(
            match d.deserialize_any(TextOrObject::<PartObject<'a>>(PhantomData))? {
                Ok(o) => Part::Object(o),
                Err(t) => Part::Text(t),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::llm::provider::ApiKind;

    /// The general path's reading of `body`, as the exchange takes it: `None` when the body is
    /// not JSON.
    fn general(api: ApiKind, body: &str) -> Option<RequestInfo> {
        let v = serde_json::from_str::<Value>(body).ok()?;
        Some(super::super::parse_request(api, &v))
    }

    #[test]
    fn a_chat_request_reads_as_the_general_path_reads_it() {
        let body = r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},
            "max_tokens":50,"temperature":0.2,"n":1,"response_format":{"type":"json_object"},
            "messages":[{"role":"system","content":"be brief"},
              {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"x"}}]},
              {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
              {"role":"tool","tool_call_id":"c1","content":"42 \u00e9"}],
            "tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}}]}"#;
        let got = read_request(body).expect("the direct read takes it");
        assert_eq!(
            got.prompt,
            "system: be brief\nuser: hi\n[image_url]\nassistant: [tool_call f({})]\ntool: 42 é"
        );
        assert_eq!(Some(got), general(ApiKind::ChatCompletions, body));
    }

    #[test]
    fn what_only_the_general_path_reads_goes_there() {
        for body in [
            // A member the general path reads otherwise (null names nothing; a number is
            // written out as JSON).
            r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"function":{"name":null},"name":"n"}]}"#,
            r#"{"messages":[{"role":"user","content":7}]}"#,
            r#"{"messages":[{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":null}}]}]}"#,
            // A duplicate member (the general path keeps the last).
            r#"{"model":"a","model":"b","messages":"x"}"#,
            // An empty prompt, completed from the whole document.
            r#"{"model":"a","messages":[]}"#,
            // Not an object.
            r#"["messages"]"#,
            // Values the general path refuses, in a member neither reads.
            r#"{"messages":"x","other":1e400}"#,
            r#"{"messages":"x","other":["\ud800"]}"#,
        ] {
            assert!(read_request(body).is_none(), "{body}");
        }
    }

    /// Values of every type, and some both reads refuse.
    const TOKENS: &[&str] = &[
        "null",
        "true",
        "0",
        "-0",
        "7",
        "2.0",
        "1E2",
        "-3",
        "18446744073709551616",
        "1e400",
        "\"\"",
        "\"abc\"",
        "\"a\\nb\"",
        "\"\\ud800\"",
        "\"\\u00e9\"",
        "[]",
        "{}",
        "[1,{\"a\":[null]}]",
        "{\"a\":\"b\"}",
    ];

    fn token() -> BoxedStrategy<String> {
        proptest::sample::select(TOKENS)
            .prop_map(str::to_owned)
            .boxed()
    }

    /// A string value: plain, empty, blank, non-ASCII, escaped, a surrogate pair.
    const STRINGS: &[&str] = &[
        "\"hi\"",
        "\"\"",
        "\" \"",
        "\"é ✓\"",
        "\"a \\\"q\\\" b\"",
        "\"\\ud83d\\ude00\"",
    ];

    fn string() -> BoxedStrategy<String> {
        proptest::sample::select(STRINGS)
            .prop_map(str::to_owned)
            .boxed()
    }

    /// A string or null.
    fn text() -> BoxedStrategy<String> {
        prop_oneof![6 => string(), 1 => Just("null".to_owned())].boxed()
    }

    fn object(members: Vec<(String, String)>) -> String {
        let inner: Vec<String> = members
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", inner.join(","))
    }

    fn list(item: BoxedStrategy<String>) -> BoxedStrategy<String> {
        proptest::collection::vec(item, 0..4)
            .prop_map(|v| format!("[{}]", v.join(",")))
            .boxed()
    }

    fn select(values: &'static [&'static str]) -> BoxedStrategy<String> {
        proptest::sample::select(values)
            .prop_map(str::to_owned)
            .boxed()
    }

    /// `key` and a value: mostly of the type the direct read takes there, sometimes any.
    fn member(key: &'static str) -> BoxedStrategy<(String, String)> {
        let typed = match key {
            "stream" | "include_usage" => select(&["true", "false", "null"]),
            "max_tokens" | "max_completion_tokens" | "max_output_tokens" => prop_oneof![
                8 => select(&["0", "5", "256", "null"]),
                1 => select(&["-0", "2.0", "-1", "1E2", "18446744073709551616"]),
            ]
            .boxed(),
            "temperature" => select(&["0", "0.5", "1", "2.0", "-0", "1E2", "null"]),
            "stream_options" => object_of(&["include_usage"], &["other"]),
            "tools" | "functions" => list(object_of(&["function", "type"], &["name", "other"])),
            "function" => object_of(&["name", "arguments"], &["other"]),
            "messages" | "input" | "prompt" => prop_oneof![
                1 => text(),
                4 => list(prop_oneof![1 => string(), 4 => message()].boxed()),
            ]
            .boxed(),
            "content" | "output" => prop_oneof![
                3 => text(),
                2 => list(prop_oneof![
                    1 => string(),
                    3 => object_of(&["type", "text"], &["content", "other"]),
                ].boxed()),
            ]
            .boxed(),
            "tool_calls" => list(object_of(&["id", "type", "function"], &["other"])),
            "type" => select(&[
                "\"message\"",
                "\"function_call\"",
                "\"function_call_output\"",
                "\"text\"",
                "\"function\"",
                "null",
            ]),
            "role" => select(&[
                "\"user\"",
                "\"system\"",
                "\"assistant\"",
                "\"tool\"",
                "null",
            ]),
            "name" | "arguments" | "id" => {
                prop_oneof![12 => string(), 1 => Just("null".to_owned())].boxed()
            }
            _ => text(),
        };
        // Now and then the key's first letter written as an escape, which names the same
        // member.
        let name = prop_oneof![
            30 => Just(key.to_owned()),
            1 => Just(format!("\\u{:04x}{}", u32::from(key.as_bytes()[0]), &key[1..])),
        ];
        (name, prop_oneof![30 => typed, 1 => token()]).boxed()
    }

    /// Members of `keys` in any order, now and then one twice or one of `rare` (members the
    /// direct read refuses, or reads seldom).
    fn object_of(
        keys: &'static [&'static str],
        rare: &'static [&'static str],
    ) -> BoxedStrategy<String> {
        let distinct = proptest::sample::subsequence(keys, 0..=keys.len())
            .prop_shuffle()
            .prop_flat_map(|ks| ks.into_iter().map(member).collect::<Vec<_>>());
        let all: Vec<&'static str> = keys.iter().chain(rare).copied().collect();
        let extra =
            proptest::option::weighted(0.15, proptest::sample::select(all).prop_flat_map(member));
        (distinct, extra)
            .prop_map(|(mut m, extra)| {
                m.extend(extra);
                object(m)
            })
            .boxed()
    }

    fn message() -> BoxedStrategy<String> {
        object_of(
            &["role", "content", "tool_calls"],
            &["type", "output", "name", "arguments", "other"],
        )
    }

    /// A request, now and then with whitespace or something else around it.
    fn request() -> BoxedStrategy<String> {
        let around = proptest::sample::select(&["", "", "", "", " ", "\n", "x", "{}"][..]);
        (around.clone(), members_of_request(), around)
            .prop_map(|(lead, doc, trail)| {
                // Something other than whitespace goes after the document only.
                let lead = if lead.trim().is_empty() { lead } else { "" };
                format!("{lead}{doc}{trail}")
            })
            .boxed()
    }

    fn members_of_request() -> BoxedStrategy<String> {
        object_of(
            &[
                "model",
                "stream",
                "stream_options",
                "max_tokens",
                "max_completion_tokens",
                "max_output_tokens",
                "temperature",
                "tools",
                "functions",
                "instructions",
                "messages",
                "input",
                "prompt",
                "other",
            ],
            &[],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The direct read is the general path's reading or nothing, whatever the API.
        #[test]
        fn the_direct_read_is_the_general_one(
            body in request(),
            api in proptest::sample::select(vec![ApiKind::ChatCompletions, ApiKind::Embeddings, ApiKind::Responses]),
        ) {
            if let Some(got) = read_request(&body) {
                prop_assert_eq!(Some(got), general(api, &body), "{}", body);
            }
        }
    }

    /// The generated documents reach the direct read: of those whose prompt the general path
    /// reads whole and not empty, the direct read takes a good share (the others hold a value
    /// of another type somewhere), so the differential test above compares something.
    #[test]
    fn the_direct_read_takes_a_good_share_of_the_documents() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut readable, mut taken) = (0, 0);
        for _ in 0..4000 {
            let body = request().new_tree(&mut runner).unwrap().current();
            let Some(want) = general(ApiKind::ChatCompletions, &body) else {
                continue;
            };
            if want.prompt.trim().is_empty() {
                continue;
            }
            readable += 1;
            if let Some(got) = read_request(&body) {
                assert_eq!(got, want, "{body}");
                taken += 1;
            }
        }
        assert!(readable > 500, "{readable} documents with a prompt");
        assert!(taken * 4 > readable, "{taken} of {readable} taken");
    }

    #[test]
    fn prompts_at_the_stored_text_bound_read_alike_or_go_to_the_general_path() {
        use crate::llm::model::MAX_TEXT;
        // "user: " and the text; a two-byte character across the bound now and then.
        for len in [
            MAX_TEXT - 7,
            MAX_TEXT - 6,
            MAX_TEXT - 5,
            MAX_TEXT,
            MAX_TEXT + 3,
        ] {
            for tail in ["", "é"] {
                let text = format!("{}{tail}", "a".repeat(len));
                let body = serde_json::json!({"messages": [{"role": "user", "content": text}]})
                    .to_string();
                let want = general(ApiKind::ChatCompletions, &body).unwrap();
                match read_request(&body) {
                    Some(got) => assert_eq!(got, want),
                    None => assert!(want.prompt_truncated, "{len} + {tail:?}"),
                }
            }
        }
    }
}
