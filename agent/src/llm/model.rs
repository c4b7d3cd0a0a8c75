//! Provider-neutral results of parsing a request and a response.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::Value;

use super::usage::Usage;

/// Bound on kept prompt / response / reasoning text (bytes); beyond it text is dropped and marked.
pub const MAX_TEXT: usize = 1 << 20;

/// A tool (function) call, assembled across stream deltas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ToolCall {
    /// Provider id of the call (`call_…`, `toolu_…`), if any.
    pub id: Option<String>,
    /// Function / tool name.
    pub name: String,
    /// Arguments as JSON text (as the model produced it; may be invalid JSON).
    pub arguments: String,
}

/// What the request says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    /// Names of the tools offered to the model.
    pub tools: Vec<String>,
    /// Prompt text, one `role: text` line group per message, for display and analysis.
    pub prompt: String,
    pub prompt_truncated: bool,
}

/// What the response says.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResponseInfo {
    /// Model named by the provider in the response.
    pub model: Option<String>,
    pub text: String,
    /// Reasoning / thinking text, kept apart from the answer.
    pub reasoning: String,
    pub text_truncated: bool,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<String>,
    /// Provider response / message id.
    pub response_id: Option<String>,
    pub usage: Usage,
    /// Error message reported by the provider in the body or stream.
    pub error: Option<String>,
    /// JSON documents or events that could not be parsed.
    pub parse_errors: u32,
    /// The provider's terminal event was seen (`[DONE]`, `message_stop`, `response.completed`,
    /// a Gemini candidate's `finishReason`, an error event): the answer is whole, whatever
    /// follows it on the wire.
    pub terminal: bool,
}

impl ResponseInfo {
    pub(crate) fn push_text(&mut self, s: &str) {
        push_bounded(&mut self.text, s, &mut self.text_truncated);
    }

    pub(crate) fn push_reasoning(&mut self, s: &str) {
        push_bounded(&mut self.reasoning, s, &mut self.text_truncated);
    }

    pub(crate) fn set_model(&mut self, m: Option<&str>) {
        if let Some(m) = m.filter(|m| !m.is_empty()) {
            m.clone_into(self.model.get_or_insert_with(String::new));
        }
    }

    pub(crate) fn set_id(&mut self, id: Option<&str>) {
        if self.response_id.is_none() {
            self.response_id = id.filter(|s| !s.is_empty()).map(str::to_owned);
        }
    }

    /// Total bytes of output produced so far (text + tool arguments), to tell which chunks
    /// carried output.
    pub fn output_len(&self) -> usize {
        self.text.len()
            + self
                .tool_calls
                .iter()
                .map(|t| t.name.len() + t.arguments.len())
                .sum::<usize>()
    }
}

/// Appends `s` unless `out` would grow past [`MAX_TEXT`] (cut on a char boundary).
pub(crate) fn push_bounded(out: &mut String, s: &str, truncated: &mut bool) {
    let room = MAX_TEXT.saturating_sub(out.len());
    if s.len() <= room {
        out.push_str(s);
        return;
    }
    let mut cut = room;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    out.push_str(&s[..cut]);
    *truncated = true;
}

/// Text of a message `content`: a string, or the `text` of an array of parts (non-text parts
/// become a `[type]` marker). A plain string is borrowed, not copied.
pub(crate) fn content_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                let piece = match p {
                    Value::String(s) => Cow::Borrowed(s.as_str()),
                    Value::Object(o) => match o.get("text").and_then(Value::as_str) {
                        Some(t) => Cow::Borrowed(t),
                        None => match o.get("content") {
                            Some(c) if !c.is_null() => content_text(c),
                            _ => Cow::Owned(format!(
                                "[{}]",
                                o.get("type").and_then(Value::as_str).unwrap_or("part")
                            )),
                        },
                    },
                    _ => continue,
                };
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&piece);
            }
            Cow::Owned(out)
        }
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

/// Accumulates a role-prefixed prompt.
#[derive(Debug, Default)]
pub(crate) struct PromptBuilder {
    pub text: String,
    pub truncated: bool,
}

impl PromptBuilder {
    pub fn add(&mut self, role: &str, text: &str) {
        if text.is_empty() {
            return;
        }
        // One allocation for the four pieces instead of growing through each (bounded as
        // the text is).
        let room = MAX_TEXT.saturating_sub(self.text.len());
        self.text.reserve((role.len() + text.len() + 3).min(room));
        if !self.text.is_empty() {
            push_bounded(&mut self.text, "\n", &mut self.truncated);
        }
        push_bounded(&mut self.text, role, &mut self.truncated);
        push_bounded(&mut self.text, ": ", &mut self.truncated);
        push_bounded(&mut self.text, text, &mut self.truncated);
    }
}

/// Error message of a provider error object (`{"error": {...}}` or `{"error": "..."}`).
pub(crate) fn error_message(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    if let Some(s) = e.as_str() {
        return Some(s.to_owned());
    }
    let msg = e.get("message").and_then(Value::as_str).unwrap_or("error");
    let kind = e
        .get("type")
        .or_else(|| e.get("status"))
        .or_else(|| e.get("code"))
        .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_owned));
    Some(match kind {
        Some(k) => format!("{k}: {msg}"),
        None => msg.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn content_shapes() {
        assert_eq!(content_text(&json!("hi")), "hi");
        assert_eq!(
            content_text(
                &json!([{"type":"text","text":"a"},{"type":"image_url"},{"type":"input_text","text":"b"}])
            ),
            "a\n[image_url]\nb"
        );
    }

    #[test]
    fn bounded_push_cuts_on_char_boundary() {
        let mut s = "x".repeat(MAX_TEXT - 1);
        let mut t = false;
        push_bounded(&mut s, "éé", &mut t);
        assert!(t && s.len() == MAX_TEXT - 1);
    }
}
