//! Chat completions, legacy completions and embeddings: one chunk model serves whole bodies
//! and stream chunks (`delta` or `message`); tool calls are assembled by their stream index.

use serde::Deserialize;
use serde_json::Value;

use super::OaUsage;
use crate::llm::model::{ResponseInfo, ToolCall, content_text, error_message};

/// A chat / completions / embeddings response body or stream chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Chunk {
    id: Option<String>,
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<OaUsage>,
    /// Whether the document has an `error` member (whatever its value): such documents take
    /// the general path, which reads the error out of the whole value.
    #[serde(deserialize_with = "present")]
    error: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Choice {
    index: u32,
    delta: Option<Message>,
    message: Option<Message>,
    /// Legacy completions.
    text: Option<String>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Message {
    content: Option<Value>,
    /// DeepSeek / OpenRouter style reasoning deltas.
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<CallDelta>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CallDelta {
    index: Option<usize>,
    id: Option<String>,
    function: Option<FnDelta>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FnDelta {
    name: Option<String>,
    arguments: Option<String>,
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
}

impl ChatAcc {
    /// One stream event's `data` or a whole body.
    pub fn document(&mut self, data: &str) {
        if data.trim() == "[DONE]" {
            self.info.terminal = true;
            return;
        }
        // The common document parses straight into its model; building a generic value
        // first (a map per object, a string per key) cost more than the rest of the
        // response analysis. Anything unusual (an error member, a field of an unexpected
        // type, a duplicate key) takes the general path below, which decides as before.
        if data.trim_start().starts_with('{')
            && let Ok(chunk) = serde_json::from_str::<Chunk>(data)
            && !chunk.error
        {
            return self.chunk(chunk);
        }
        self.general(data);
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
        let Ok(chunk) = serde_json::from_value::<Chunk>(v) else {
            self.info.parse_errors += 1;
            return;
        };
        self.chunk(chunk);
    }

    fn chunk(&mut self, chunk: Chunk) {
        self.info.set_id(chunk.id.as_deref());
        self.info.set_model(chunk.model.as_deref());
        if let Some(u) = chunk.usage {
            self.info.usage = u.into_usage();
        }
        for c in chunk.choices.into_iter().filter(|c| c.index == 0) {
            self.choice(c);
        }
    }

    fn choice(&mut self, c: Choice) {
        if let Some(t) = &c.text {
            self.info.push_text(t);
        }
        let whole = c.message.is_some();
        if let Some(m) = c.delta.or(c.message) {
            if let Some(content) = &m.content {
                self.info.push_text(&content_text(content));
            }
            if let Some(r) = m.refusal.as_deref() {
                self.info.push_text(r);
            }
            if let Some(r) = m.reasoning_content.as_deref().or(m.reasoning.as_deref()) {
                self.info.push_reasoning(r);
            }
            for (i, d) in m.tool_calls.into_iter().enumerate() {
                self.call(if whole { i } else { d.index.unwrap_or(i) }, d);
            }
        }
        if c.finish_reason.is_some() {
            self.info.finish_reason = c.finish_reason;
        }
    }

    fn call(&mut self, index: usize, d: CallDelta) {
        let slot = if let Some((_, s)) = self.call_slots.iter().find(|(i, _)| *i == index) {
            *s
        } else {
            self.info.tool_calls.push(ToolCall::default());
            let s = self.info.tool_calls.len() - 1;
            self.call_slots.push((index, s));
            s
        };
        let call = &mut self.info.tool_calls[slot];
        if d.id.is_some() {
            call.id = d.id;
        }
        if let Some(f) = d.function {
            if let Some(n) = f.name {
                call.name.push_str(&n);
            }
            if let Some(a) = f.arguments {
                call.arguments.push_str(&a);
            }
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
