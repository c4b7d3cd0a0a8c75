//! Anthropic Messages API: request, whole response and stream events (`message_start`,
//! `content_block_start/delta/stop`, `message_delta`, `message_stop`, `ping`, `error`), with
//! `tool_use` and `thinking` blocks.

use serde::Deserialize;
use serde_json::Value;

use super::borrowed::{Object, Str, or_empty};
use super::model::{
    PromptBuilder, RequestInfo, ResponseInfo, ToolCall, content_text, error_message,
};
use super::usage::{Usage, num};

/// Parses a Messages request body.
pub fn parse_request(v: &Value) -> RequestInfo {
    let mut p = PromptBuilder::default();
    if let Some(system) = v.get("system") {
        p.add("system", &content_text(system));
    }
    for m in v
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        match m.get("content") {
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    p.add(role, &block_text(b));
                }
            }
            Some(c) => p.add(role, &content_text(c)),
            None => {}
        }
    }
    RequestInfo {
        model: v.get("model").and_then(Value::as_str).map(str::to_owned),
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: true,
        max_tokens: num(v, "max_tokens"),
        temperature: v.get("temperature").and_then(Value::as_f64),
        tools: v
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        prompt: p.text,
        prompt_truncated: p.truncated,
    }
}

fn block_text(b: &Value) -> String {
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
    match s("type") {
        "text" => s("text").to_owned(),
        "tool_use" => format!(
            "[tool_call {}({})]",
            s("name"),
            b.get("input").map(Value::to_string).unwrap_or_default()
        ),
        "tool_result" => content_text(b.get("content").unwrap_or(&Value::Null)).into_owned(),
        "thinking" | "redacted_thinking" => String::new(),
        other => format!("[{other}]"),
    }
}

/// A `content_block_delta` event, as the direct path reads it.
#[derive(Debug, Deserialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type", deserialize_with = "content_block_delta")]
    _kind: (),
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<Object<DeltaBody<'a>>>,
}

/// Accepts only the type `content_block_delta`. Anthropic writes `type` first, so another
/// event's direct read ends there instead of at the end of the document.
fn content_block_delta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    if &*Str::deserialize(d)? == "content_block_delta" {
        Ok(())
    } else {
        Err(serde::de::Error::custom("not a content_block_delta"))
    }
}

#[derive(Debug, Deserialize)]
struct DeltaBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    text: Option<Str<'a>>,
    #[serde(borrow)]
    thinking: Option<Str<'a>>,
    #[serde(borrow)]
    partial_json: Option<Str<'a>>,
}

// Field names mirror the wire format.
#[allow(clippy::struct_field_names)]
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AnUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// Accumulator for Messages responses, whole or streamed.
#[derive(Debug, Default)]
pub struct MessagesAcc {
    pub info: ResponseInfo,
    raw: AnUsage,
    /// Stream block index → tool call slot.
    blocks: Vec<(u64, usize)>,
}

impl MessagesAcc {
    /// One stream event's `data`. A stream is mostly `content_block_delta` events: they
    /// parse straight into a borrowed model (a generic value, a map per object and a string
    /// per key, cost twice as much). Any other event, or anything unusual (a member of an
    /// unexpected type, a duplicate key, an array where an object belongs), is read by
    /// [`Self::document`]; the direct read stops at the `type` of another event, so such an
    /// event is not read whole twice. The one difference: members the model does not read are
    /// skipped, not checked, so a number out of range or a lone surrogate there does not cost
    /// the event its text, as it does in `document` (the chat path has always read its chunks
    /// so).
    pub fn event(&mut self, data: &str) {
        let Ok(Object(e)) = serde_json::from_str::<Object<BlockDelta>>(data) else {
            return self.document(data);
        };
        if let Some(Object(d)) = e.delta {
            self.delta(
                e.index,
                or_empty(d.kind.as_ref()),
                or_empty(d.text.as_ref()),
                or_empty(d.thinking.as_ref()),
                or_empty(d.partial_json.as_ref()),
            );
        }
        self.info.usage = self.normalised();
    }

    /// One stream event (its `data`; the type is read from the JSON `type` field, which
    /// Anthropic always mirrors from the SSE `event:` name) or a whole body, as a value.
    pub fn document(&mut self, data: &str) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            self.info.parse_errors += 1;
            return;
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        // A Messages stream ends with `message_stop`, or with an `error` event.
        if matches!(kind, "message_stop" | "error") {
            self.info.terminal = true;
        }
        match kind {
            "message_start" => {
                if let Some(m) = v.get("message") {
                    self.message(m);
                }
            }
            "content_block_start" => self.block_start(&v),
            "content_block_delta" => self.block_delta(&v),
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.info.finish_reason = Some(r.to_owned());
                }
                self.usage(v.get("usage"));
            }
            "error" => self.info.error = error_message(&v),
            "message" => self.message(&v),
            // content_block_stop, message_stop, ping: nothing to keep.
            _ => {}
        }
        self.info.usage = self.normalised();
    }

    fn message(&mut self, m: &Value) {
        self.info.set_id(m.get("id").and_then(Value::as_str));
        self.info.set_model(m.get("model").and_then(Value::as_str));
        if let Some(r) = m.get("stop_reason").and_then(Value::as_str) {
            self.info.finish_reason = Some(r.to_owned());
        }
        self.usage(m.get("usage"));
        for b in m
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.whole_block(b);
        }
    }

    fn whole_block(&mut self, b: &Value) {
        let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
        match s("type") {
            "text" => self.info.push_text(s("text")),
            "thinking" => self.info.push_reasoning(s("thinking")),
            "tool_use" | "server_tool_use" => {
                let input = b
                    .get("input")
                    .filter(|i| i.as_object().is_none_or(|o| !o.is_empty()));
                self.info.tool_calls.push(ToolCall {
                    id: Some(s("id").to_owned()).filter(|i| !i.is_empty()),
                    name: s("name").to_owned(),
                    arguments: input.map(Value::to_string).unwrap_or_default(),
                });
            }
            _ => {}
        }
    }

    fn block_start(&mut self, v: &Value) {
        let Some(b) = v.get("content_block") else {
            return;
        };
        let index = num(v, "index").unwrap_or(0);
        let is_tool = matches!(
            b.get("type").and_then(Value::as_str),
            Some("tool_use" | "server_tool_use")
        );
        self.whole_block(b);
        if is_tool {
            self.blocks.push((index, self.info.tool_calls.len() - 1));
        }
    }

    fn block_delta(&mut self, v: &Value) {
        let Some(d) = v.get("delta") else { return };
        let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("");
        self.delta(
            num(v, "index"),
            s("type"),
            s("text"),
            s("thinking"),
            s("partial_json"),
        );
    }

    /// A `content_block_delta`'s delta, from either path (a missing member reads as "").
    fn delta(&mut self, index: Option<u64>, kind: &str, text: &str, thinking: &str, json: &str) {
        match kind {
            "text_delta" => self.info.push_text(text),
            "thinking_delta" => self.info.push_reasoning(thinking),
            "input_json_delta" => {
                let index = index.unwrap_or(0);
                if let Some((_, slot)) = self.blocks.iter().find(|(i, _)| *i == index) {
                    self.info.tool_calls[*slot].arguments.push_str(json);
                }
            }
            _ => {}
        }
    }

    fn usage(&mut self, u: Option<&Value>) {
        let Some(u) = u.and_then(|u| AnUsage::deserialize(u).ok()) else {
            return;
        };
        // message_delta carries cumulative counts; keep the latest of each.
        self.raw.input_tokens = u.input_tokens.or(self.raw.input_tokens);
        self.raw.output_tokens = u.output_tokens.or(self.raw.output_tokens);
        self.raw.cache_creation_input_tokens = u
            .cache_creation_input_tokens
            .or(self.raw.cache_creation_input_tokens);
        self.raw.cache_read_input_tokens = u
            .cache_read_input_tokens
            .or(self.raw.cache_read_input_tokens);
    }

    fn normalised(&self) -> Usage {
        let r = &self.raw;
        let cached = r.cache_read_input_tokens;
        let write = r.cache_creation_input_tokens;
        Usage {
            input: r
                .input_tokens
                .map(|i| i + cached.unwrap_or(0) + write.unwrap_or(0)),
            output: r.output_tokens,
            cached_input: cached,
            cache_write: write,
            reasoning: None,
            estimated: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn request_prompt_with_blocks() {
        let v = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": [{"type": "text", "text": "sys"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "tool_result", "tool_use_id": "t", "content": "r"}]}],
            "tools": [{"name": "bash"}]});
        let r = parse_request(&v);
        assert_eq!(r.prompt, "system: sys\nuser: q\nuser: r");
        assert_eq!(r.tools, vec!["bash"]);
        assert_eq!(r.max_tokens, Some(100));
    }

    #[test]
    fn the_direct_parse_decides_as_the_general_path() {
        let start = [
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#,
        ];
        let docs = [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\"b"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"x\":1}"}}"#,
            r#"{"type":"content_block_delta","index":-1,"delta":{"type":"input_json_delta","partial_json":"neg"}}"#,
            r#"{"type":"content_block_delta","index":"1","delta":{"type":"input_json_delta","partial_json":"str"}}"#,
            r#"{"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"none"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":7}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":null}"#,
            r#"{"type":"content_block_delta","index":0,"delta":"text"}"#,
            r#"{"type":"content_block_delta","index":0}"#,
            r#"{"type":"content_block_delta","type":"message_stop"}"#,
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"a","text":"b"}}"#,
            r#"{"type":7,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"message_stop"}"#,
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"cut"#,
            r#"["content_block_delta"]"#,
            r#"["content_block_delta",0,["text_delta","hi",null,null]]"#,
            r#"{"type":"content_block_delta","index":0,"delta":["text_delta","hi",null,null]}"#,
            r#"{"type":"content_block_delta","index":1.0,"delta":{"type":"input_json_delta","partial_json":"f"}}"#,
            r#"{"type":"content_block_delta","index":18446744073709551616,"delta":{"type":"input_json_delta","partial_json":"big"}}"#,
            r#" {"type":"content_block_delta","delta":{"type":"text_delta","text":null}} "#,
        ];
        for d in docs {
            let (mut direct, mut general) = (MessagesAcc::default(), MessagesAcc::default());
            for s in start {
                direct.event(s);
                general.document(s);
            }
            direct.event(d);
            general.document(d);
            assert_eq!(direct.info, general.info, "{d}");
        }
        let mut a = MessagesAcc::default();
        a.event(docs[0]);
        assert_eq!(a.info.text, "hi");
        // The known difference: a member nobody reads is skipped unchecked.
        let odd = r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"kept"},"x":1e400}"#;
        let (mut direct, mut general) = (MessagesAcc::default(), MessagesAcc::default());
        direct.event(odd);
        general.document(odd);
        assert_eq!(
            (direct.info.text.as_str(), direct.info.parse_errors),
            ("kept", 0)
        );
        assert_eq!(
            (general.info.text.as_str(), general.info.parse_errors),
            ("", 1)
        );
    }

    #[test]
    fn cache_tokens_normalised() {
        let mut a = MessagesAcc::default();
        a.document(r#"{"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":10,"cache_read_input_tokens":100,"cache_creation_input_tokens":5,"output_tokens":1}}}"#);
        a.document(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}"#);
        assert_eq!(a.info.usage.input, Some(115));
        assert_eq!(a.info.usage.output, Some(42));
        assert_eq!(a.info.usage.cached_input, Some(100));
        assert_eq!(a.info.finish_reason.as_deref(), Some("end_turn"));
    }
}
