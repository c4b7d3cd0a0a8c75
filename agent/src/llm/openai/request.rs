//! OpenAI-dialect request bodies: chat messages, Responses `input`/`instructions`, legacy
//! `prompt`, embeddings `input`.

use serde_json::Value;

use crate::llm::model::{PromptBuilder, RequestInfo, content_text};
use crate::llm::provider::ApiKind;
use crate::llm::usage::num;

/// Parses an OpenAI-dialect request body. The direct read (`request_direct.rs`) must give
/// the same reading of every body it takes: a member or shape read here is read there too (or
/// sends the body here), and its differential test generates it.
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
}
