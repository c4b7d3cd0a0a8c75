//! OpenAI- and Anthropic-shaped routes of the fake provider. The reply depends on the last
//! user message: `TOOL` → a tool call, `LEAK` → a streamed answer carrying a secret followed
//! by more text (so an early stop is visible), anything else → `Hello there`. Every request
//! body the routes receive is kept in [`Seen`].

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Request, Response, StatusCode, body::Frame, body::Incoming, header::HeaderValue};
use serde_json::{Value, json};

use super::upstream::{TestBody, channel, full};

/// Model the fake provider reports.
pub const RESPONSE_MODEL: &str = "gpt-4o-mini-2024-07-18";
/// Text after the secret in a `LEAK` stream; must never reach the app when the stream is
/// stopped.
pub const AFTER_STOP: &str = "AFTER-STOP";
/// The secret in `LEAK` answers (AWS's documented example key).
pub const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";

/// (path, body) of every LLM request the provider received.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<(String, Bytes)>>>);

impl Seen {
    pub fn all(&self) -> Vec<(String, Bytes)> {
        self.0.lock().unwrap().clone()
    }
}

pub async fn route(req: Request<Incoming>, seen: &Seen) -> Response<TestBody> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    seen.0.lock().unwrap().push((path.clone(), body.clone()));
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return full(StatusCode::BAD_REQUEST, "invalid JSON\n");
    };
    let last = v["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["content"].to_string())
        .unwrap_or_default();
    let stream = v["stream"].as_bool().unwrap_or(false);
    let anthropic = path == "/v1/messages";
    let reply = if last.contains("TOOL") {
        Reply::Tool
    } else if last.contains("LEAK") {
        Reply::Leak
    } else {
        Reply::Hello
    };
    match (anthropic, stream) {
        (false, false) => json_response(&openai_json(reply)),
        (false, true) => sse(openai_events(reply)),
        (true, false) => json_response(&anthropic_json()),
        (true, true) => sse(anthropic_events()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Reply {
    Hello,
    Tool,
    Leak,
}

fn leak_deltas() -> Vec<String> {
    let mut d = vec!["Here is the key: ".to_owned(), format!("{AWS_KEY} ")];
    d.extend((0..6).map(|i| format!("padding line {i} to pass the monitor's scan step. ")));
    d.extend((0..3).map(|i| format!("{AFTER_STOP} {i} ")));
    d
}

fn usage() -> Value {
    json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17})
}

fn openai_json(reply: Reply) -> Value {
    let message = match reply {
        Reply::Tool => json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
        Reply::Leak => json!({"role": "assistant", "content": leak_deltas().concat()}),
        Reply::Hello => json!({"role": "assistant", "content": "Hello there"}),
    };
    let finish = if reply == Reply::Tool {
        "tool_calls"
    } else {
        "stop"
    };
    json!({"id": "chatcmpl-1", "object": "chat.completion", "model": RESPONSE_MODEL,
           "choices": [{"index": 0, "message": message, "finish_reason": finish}],
           "usage": usage()})
}

fn openai_events(reply: Reply) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": RESPONSE_MODEL,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let finish = match reply {
        Reply::Tool => {
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                       "function": {"name": "get_weather", "arguments": ""}}]}),
                Value::Null,
            ));
            for part in ["{\"city\":", "\"Paris\"}"] {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    Value::Null,
                ));
            }
            "tool_calls"
        }
        Reply::Leak => {
            for d in leak_deltas() {
                events.push(chunk(json!({"content": d}), Value::Null));
            }
            "stop"
        }
        Reply::Hello => {
            for d in ["Hel", "lo there"] {
                events.push(chunk(json!({"content": d}), Value::Null));
            }
            "stop"
        }
    };
    events.push(chunk(json!({}), json!(finish)));
    events.push(
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                       "model": RESPONSE_MODEL, "choices": [], "usage": usage()}),
    );
    let mut out: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    out.push("data: [DONE]\n\n".to_owned());
    out
}

fn anthropic_json() -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
           "content": [{"type": "text", "text": "Hello there"}], "stop_reason": "end_turn",
           "usage": {"input_tokens": 12, "output_tokens": 5}})
}

fn anthropic_events() -> Vec<String> {
    let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                "role": "assistant", "model": "claude-3-5-haiku-20241022", "content": [],
                "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}}),
        ),
        ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": "Hello there"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"output_tokens": 5}}),
        ),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
}

fn json_response(v: &Value) -> Response<TestBody> {
    let mut r = full(StatusCode::OK, v.to_string());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// Each event in its own frame, a few ms apart, so the proxy sees them one by one.
fn sse(events: Vec<String>) -> Response<TestBody> {
    let (tx, body) = channel();
    tokio::spawn(async move {
        for e in events {
            if tx.send(Ok(Frame::data(Bytes::from(e)))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut r = Response::new(body);
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    r
}
