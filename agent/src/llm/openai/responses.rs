//! Responses API: typed stream events (`response.output_text.delta`,
//! `response.function_call_arguments.delta`, `response.output_item.added/done`,
//! `response.completed`…) or a whole response object.

use serde::Deserialize;
use serde_json::Value;

use super::OaUsage;
use crate::llm::{
    borrowed::{Object, Str, or_empty},
    model::{ResponseInfo, ToolCall, content_text, error_message},
};

/// A delta event, as the direct path reads it.
#[derive(Debug, Deserialize)]
struct DeltaEvent<'a> {
    #[serde(rename = "type", deserialize_with = "delta_kind")]
    kind: DeltaKind,
    #[serde(borrow)]
    item_id: Option<Str<'a>>,
    #[serde(borrow)]
    delta: Option<Str<'a>>,
}

/// What a delta event adds to.
#[derive(Debug, Clone, Copy)]
enum DeltaKind {
    /// Output text or a refusal.
    Text,
    Reasoning,
    /// A function call's arguments.
    Arguments,
}

impl DeltaKind {
    fn of(kind: &str) -> Option<Self> {
        match kind {
            "response.output_text.delta" | "response.refusal.delta" => Some(Self::Text),
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                Some(Self::Reasoning)
            }
            "response.function_call_arguments.delta" => Some(Self::Arguments),
            _ => None,
        }
    }
}

/// Accepts only a delta event's type. OpenAI writes `type` first, so another event's direct
/// read ends there instead of at the end of the document.
fn delta_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DeltaKind, D::Error> {
    DeltaKind::of(&Str::deserialize(d)?)
        .ok_or_else(|| serde::de::Error::custom("not a delta event"))
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
    /// One stream event's `data`. A stream is mostly delta events: they parse straight into
    /// a borrowed model (a generic value, a map per object and a string per key, cost twice as
    /// much). Any other event, or anything unusual (a member of an unexpected type, a
    /// duplicate key, an array where an object belongs), is read by [`Self::document`]; the
    /// direct read stops at the `type` of another event, so such an event (`response.completed`
    /// carries the whole response) is not read whole twice. The one difference: members the
    /// model does not read are skipped, not checked, so a number out of range or a lone
    /// surrogate there does not cost the event its text, as it does in `document`.
    pub fn event(&mut self, data: &str) {
        match serde_json::from_str::<Object<DeltaEvent>>(data) {
            Ok(Object(e)) => self.delta(
                e.kind,
                or_empty(e.item_id.as_ref()),
                or_empty(e.delta.as_ref()),
            ),
            Err(_) => self.document(data),
        }
    }

    /// One stream event's `data` or a whole body, as a value.
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
        if let Some(delta) = DeltaKind::of(kind) {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
            return self.delta(delta, s("item_id"), s("delta"));
        }
        match kind {
            "response.output_item.added" | "response.output_item.done" => {
                if let Some(item) = v.get("item") {
                    self.item(item);
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

    /// A delta event, from either path (a missing member reads as "").
    fn delta(&mut self, kind: DeltaKind, item_id: &str, delta: &str) {
        match kind {
            DeltaKind::Text => {
                self.saw_delta = true;
                self.info.push_text(delta);
            }
            DeltaKind::Reasoning => self.info.push_reasoning(delta),
            DeltaKind::Arguments => {
                if let Some(slot) = self.slot(item_id) {
                    self.info.tool_calls[slot].arguments.push_str(delta);
                }
            }
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
    use super::*;

    #[test]
    fn the_direct_parse_decides_as_the_general_path() {
        let added = r#"{"type":"response.output_item.added","item":{"type":"function_call","id":"fc_1","name":"f","arguments":""}}"#;
        let docs = [
            r#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"hi","sequence_number":4,"logprobs":[]}"#,
            r#"{"type":"response.output_text.delta","delta":"a\"b"}"#,
            r#"{"type":"response.refusal.delta","delta":"no"}"#,
            r#"{"type":"response.reasoning_summary_text.delta","delta":"hm"}"#,
            r#"{"type":"response.reasoning_text.delta","delta":"hm"}"#,
            r#"{"type":"response.function_call_arguments.delta","item_id":"fc_1","delta":"{\"x\":1}"}"#,
            r#"{"type":"response.function_call_arguments.delta","item_id":"other","delta":"lost"}"#,
            r#"{"type":"response.function_call_arguments.delta","delta":"no id"}"#,
            r#"{"type":"response.output_text.delta"}"#,
            r#"{"type":"response.output_text.delta","delta":7}"#,
            r#"{"type":"response.output_text.delta","delta":"a","delta":"b"}"#,
            r#"{"type":"response.output_text.delta","type":"response.completed"}"#,
            r#"{"type":7,"delta":"x"}"#,
            r#"{"type":"response.completed","response":{"id":"r","model":"m","status":"completed"}}"#,
            r#"{"type":"response.output_text.delta","delta":"cut"#,
            r#"["response.output_text.delta"]"#,
            r#"["response.output_text.delta",null,"hi"]"#,
            r#"{"type":"response.output_text.delta","delta":null}"#,
        ];
        for d in docs {
            let (mut direct, mut general) = (ResponsesAcc::default(), ResponsesAcc::default());
            direct.event(added);
            general.document(added);
            direct.event(d);
            general.document(d);
            assert_eq!(direct.info, general.info, "{d}");
            assert_eq!(direct.saw_delta, general.saw_delta, "{d}");
        }
        let mut a = ResponsesAcc::default();
        a.event(docs[0]);
        assert_eq!(a.info.text, "hi");
        // The known difference: a member nobody reads is skipped unchecked.
        let odd = r#"{"type":"response.output_text.delta","delta":"kept","obfuscation":"\udc00"}"#;
        let (mut direct, mut general) = (ResponsesAcc::default(), ResponsesAcc::default());
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
}
