//! Anthropic-shaped answers: Messages API, plain or streamed, with or without tool use.

use serde_json::{Value, json};

use super::Reply;

/// The model the fake reports back.
pub const MODEL: &str = "claude-3-5-haiku-20241022";
/// The answer text.
pub const TEXT: &str = "Hello from the fake provider.";
/// Usage reported: input and output tokens.
pub const USAGE: (u32, u32) = (20, 9);

/// `POST /v1/messages`.
pub fn messages(req: &Value) -> Reply {
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let tools = req
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    let stop_reason = if tools { "tool_use" } else { "end_turn" };
    if !stream {
        let content = if tools {
            json!([{"type": "tool_use", "id": "toolu_fake1", "name": "get_weather", "input": {"city": "Paris"}}])
        } else {
            json!([{"type": "text", "text": TEXT}])
        };
        return Reply::json(
            &json!({"id": "msg_fake1", "type": "message", "role": "assistant",
            "model": MODEL, "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": USAGE.0, "output_tokens": USAGE.1}}),
        );
    }
    let mut events: Vec<(&str, Value)> = vec![(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_fake1", "type": "message",
            "role": "assistant", "model": MODEL, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": USAGE.0, "output_tokens": 1}}}),
    )];
    if tools {
        events.push(("content_block_start", json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_fake1", "name": "get_weather", "input": {}}})));
        for part in ["{\"city\"", ": \"Par", "is\"}"] {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
    } else {
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ));
        events.push(("ping", json!({"type": "ping"})));
        for part in ["Hello", " from the", " fake provider."] {
            events.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": part}}),
            ));
        }
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": USAGE.1}})));
    events.push(("message_stop", json!({"type": "message_stop"})));
    Reply::sse(
        events
            .iter()
            .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
            .collect(),
    )
}
