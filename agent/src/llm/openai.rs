//! OpenAI dialect: chat completions, legacy completions, embeddings (one chunk model) and the
//! Responses API (typed events). Also used by Azure OpenAI and the OpenAI-compatible providers.

use serde::Deserialize;
use serde_json::Value;

use super::model::{
    PromptBuilder, RequestInfo, ResponseInfo, ToolCall, content_text, error_message,
};
use super::provider::ApiKind;
use super::usage::{Usage, num};

/// Parses an OpenAI-dialect request body.
pub fn parse_request(api: ApiKind, v: &Value) -> RequestInfo {
    let mut p = PromptBuilder::default();
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut info = RequestInfo {
        model: s("model"),
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        max_tokens: ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| num(v, k)),
        temperature: v.get("temperature").and_then(Value::as_f64),
        tools: tool_names(v),
        ..RequestInfo::default()
    };
    if let Some(i) = s("instructions") {
        p.add("system", &i);
    }
    for (key, role) in [("messages", ""), ("input", "user"), ("prompt", "user")] {
        match v.get(key) {
            Some(Value::Array(items)) => {
                for item in items {
                    add_message(&mut p, item, role);
                }
            }
            Some(Value::String(text)) => p.add(role, text),
            _ => {}
        }
    }
    if api == ApiKind::Embeddings && p.text.is_empty() {
        p.add(
            "input",
            &v.get("input").map(Value::to_string).unwrap_or_default(),
        );
    }
    info.prompt = p.text;
    info.prompt_truncated = p.truncated;
    info
}

fn add_message(p: &mut PromptBuilder, item: &Value, default_role: &str) {
    if let Some(text) = item.as_str() {
        p.add(default_role, text);
        return;
    }
    let role = item.get("role").and_then(Value::as_str);
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match (role, kind) {
        (_, "function_call") => p.add(
            "assistant",
            &call_text(item.get("name"), item.get("arguments")),
        ),
        (_, "function_call_output") => p.add(
            "tool",
            &content_text(item.get("output").unwrap_or(&Value::Null)),
        ),
        (role, _) => {
            let role = role.unwrap_or(default_role);
            p.add(
                role,
                &content_text(item.get("content").unwrap_or(&Value::Null)),
            );
            for call in item
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let f = call.get("function");
                p.add(
                    role,
                    &call_text(
                        f.and_then(|f| f.get("name")),
                        f.and_then(|f| f.get("arguments")),
                    ),
                );
            }
        }
    }
}

fn call_text(name: Option<&Value>, args: Option<&Value>) -> String {
    let name = name.and_then(Value::as_str).unwrap_or("?");
    let args = args
        .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
        .unwrap_or_default();
    format!("[tool_call {name}({args})]")
}

fn tool_names(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["tools", "functions"] {
        for t in v.get(key).and_then(Value::as_array).into_iter().flatten() {
            let name = t
                .pointer("/function/name")
                .or_else(|| t.get("name"))
                .or_else(|| t.get("type"))
                .and_then(Value::as_str);
            out.extend(name.map(str::to_owned));
        }
    }
    out
}

/// A chat / completions / embeddings response body or stream chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Chunk {
    id: Option<String>,
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<OaUsage>,
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

/// OpenAI usage (chat and Responses field names both accepted).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct OaUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    prompt_tokens_details: Option<Value>,
    completion_tokens_details: Option<Value>,
    input_tokens_details: Option<Value>,
    output_tokens_details: Option<Value>,
}

impl OaUsage {
    pub(crate) fn into_usage(self) -> Usage {
        let detail = |d: Option<Value>, k: &str| d.as_ref().and_then(|d| num(d, k));
        Usage {
            input: self.prompt_tokens.or(self.input_tokens),
            output: self.completion_tokens.or(self.output_tokens),
            cached_input: detail(self.prompt_tokens_details, "cached_tokens")
                .or_else(|| detail(self.input_tokens_details, "cached_tokens")),
            cache_write: None,
            reasoning: detail(self.completion_tokens_details, "reasoning_tokens")
                .or_else(|| detail(self.output_tokens_details, "reasoning_tokens")),
            estimated: false,
        }
    }
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
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            self.info.parse_errors += 1;
            return;
        };
        if let Some(e) = error_message(&v) {
            self.info.error = Some(e);
            return;
        }
        let Ok(chunk) = serde_json::from_value::<Chunk>(v) else {
            self.info.parse_errors += 1;
            return;
        };
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

/// Accumulator for the Responses API (stream events or a whole response object).
#[derive(Debug, Default)]
pub struct ResponsesAcc {
    pub info: ResponseInfo,
    /// Output item id → position in `info.tool_calls`.
    items: Vec<(String, usize)>,
    saw_delta: bool,
}

impl ResponsesAcc {
    /// One stream event's `data` or a whole body.
    pub fn document(&mut self, data: &str) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            self.info.parse_errors += 1;
            return;
        };
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "response.output_text.delta" | "response.refusal.delta" => {
                self.saw_delta = true;
                self.info
                    .push_text(v.get("delta").and_then(Value::as_str).unwrap_or(""));
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                self.info
                    .push_reasoning(v.get("delta").and_then(Value::as_str).unwrap_or(""));
            }
            "response.output_item.added" | "response.output_item.done" => {
                if let Some(item) = v.get("item") {
                    self.item(item);
                }
            }
            "response.function_call_arguments.delta" => {
                let id = v.get("item_id").and_then(Value::as_str).unwrap_or("");
                if let Some(slot) = self.slot(id) {
                    let d = v.get("delta").and_then(Value::as_str).unwrap_or("");
                    self.info.tool_calls[slot].arguments.push_str(d);
                }
            }
            "error" => {
                self.info.error =
                    Some(error_message(&serde_json::json!({ "error": v })).unwrap_or_default());
            }
            k if k.starts_with("response.") => {
                if let Some(r) = v.get("response") {
                    self.response(r);
                }
            }
            // No type: a whole (non-streamed) response object.
            _ => self.response(&v),
        }
    }

    fn slot(&self, id: &str) -> Option<usize> {
        self.items.iter().find(|(i, _)| i == id).map(|(_, s)| *s)
    }

    fn item(&mut self, item: &Value) {
        if item.get("type").and_then(Value::as_str) != Some("function_call") {
            return;
        }
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let slot = self.slot(&id).unwrap_or_else(|| {
            self.info.tool_calls.push(ToolCall::default());
            self.items.push((id, self.info.tool_calls.len() - 1));
            self.info.tool_calls.len() - 1
        });
        let call = &mut self.info.tool_calls[slot];
        let s = |k: &str| {
            item.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(c) = s("call_id").or(s("id")) {
            call.id = Some(c.to_owned());
        }
        if let Some(n) = s("name") {
            n.clone_into(&mut call.name);
        }
        // The `done` item carries the complete arguments: authoritative over the deltas.
        if let Some(a) = s("arguments") {
            a.clone_into(&mut call.arguments);
        }
    }

    fn response(&mut self, r: &Value) {
        if let Some(e) = error_message(r).filter(|_| !r.get("error").is_some_and(Value::is_null)) {
            self.info.error = Some(e);
        }
        self.info.set_id(r.get("id").and_then(Value::as_str));
        self.info.set_model(r.get("model").and_then(Value::as_str));
        if let Some(status) = r.get("status").and_then(Value::as_str) {
            let reason = r
                .pointer("/incomplete_details/reason")
                .and_then(Value::as_str);
            self.info.finish_reason = Some(reason.unwrap_or(status).to_owned());
        }
        if let Some(Ok(u)) = r
            .get("usage")
            .filter(|u| !u.is_null())
            .map(OaUsage::deserialize)
        {
            self.info.usage = u.into_usage();
        }
        for item in r
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.item(item);
            if !self.saw_delta && item.get("type").and_then(Value::as_str) == Some("message") {
                self.info
                    .push_text(&content_text(item.get("content").unwrap_or(&Value::Null)));
            }
        }
        if !self.info.text.is_empty() {
            self.saw_delta = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn chat_request_fields() {
        let v = json!({
            "model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
            "max_tokens": 50, "temperature": 0.2,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather"}}]
        });
        let r = parse_request(ApiKind::ChatCompletions, &v);
        assert_eq!(r.model.as_deref(), Some("gpt-4o"));
        assert!(r.stream && r.include_usage);
        assert_eq!((r.max_tokens, r.temperature), (Some(50), Some(0.2)));
        assert_eq!(r.tools, vec!["get_weather"]);
        assert_eq!(
            r.prompt,
            "system: be brief\nuser: hi\nassistant: [tool_call f({})]"
        );
    }

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
}
