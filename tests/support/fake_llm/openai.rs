//! OpenAI-shaped answers: chat completions, plain or streamed, with or without tool calls.

use serde_json::{Value, json};

use super::Reply;

/// The model the fake reports back (a dated snapshot of the requested one).
pub const MODEL: &str = "gpt-4o-mini-2024-07-18";
/// The answer text.
pub const TEXT: &str = "Hello from the fake provider.";
/// Usage reported: prompt and completion tokens.
pub const USAGE: (u32, u32) = (12, 7);

fn tool_requested(req: &Value) -> bool {
    req.get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
}

fn usage() -> Value {
    json!({"prompt_tokens": USAGE.0, "completion_tokens": USAGE.1, "total_tokens": USAGE.0 + USAGE.1,
           "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}})
}

/// `POST /v1/chat/completions`.
pub fn chat(req: &Value) -> Reply {
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let tools = tool_requested(req);
    if !stream {
        let message = if tools {
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_fake1", "type": "function",
                   "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]})
        } else {
            json!({"role": "assistant", "content": TEXT, "refusal": null})
        };
        let body = json!({"id": "chatcmpl-fake1", "object": "chat.completion", "created": 1_700_000_000,
            "model": MODEL, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": null,
                         "finish_reason": if tools { "tool_calls" } else { "stop" }}],
            "usage": usage()});
        return Reply::json(&body);
    }
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 1_700_000_000,
               "model": MODEL, "system_fingerprint": "fp_fake",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if tools {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_fake1", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ));
        for part in ["{\"ci", "ty\":\"Pa", "ris\"}"] {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                Value::Null,
            ));
        }
        events.push(chunk(json!({}), json!("tool_calls")));
    } else {
        for part in ["Hello", " from", " the", " fake", " provider."] {
            events.push(chunk(json!({"content": part}), Value::Null));
        }
        events.push(chunk(json!({}), json!("stop")));
    }
    if include_usage {
        events.push(json!({"id": "chatcmpl-fake1", "object": "chat.completion.chunk",
                           "created": 1_700_000_000, "model": MODEL, "choices": [], "usage": usage()}));
    }
    let mut lines: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    lines.push("data: [DONE]\n\n".to_owned());
    Reply::sse(lines)
}
