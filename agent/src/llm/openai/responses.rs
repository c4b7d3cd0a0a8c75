//! Responses API: typed stream events (`response.output_text.delta`,
//! `response.function_call_arguments.delta`, `response.output_item.added/done`,
//! `response.completed`…) or a whole response object.

use serde::Deserialize;
use serde_json::Value;

use super::OaUsage;
use crate::llm::model::{ResponseInfo, ToolCall, content_text, error_message};

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
        // Every Responses stream ends with exactly one of these.
        if matches!(
            kind,
            "response.completed" | "response.incomplete" | "response.failed" | "error"
        ) {
            self.info.terminal = true;
        }
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
