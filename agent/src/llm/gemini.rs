//! Google Gemini `generateContent` / `streamGenerateContent` (SSE with `alt=sse`, or a JSON array
//! stream). Every stream element is a whole `GenerateContentResponse`; usage is cumulative.

use serde::Deserialize;
use serde_json::Value;

use super::model::{
    PromptBuilder, RequestInfo, ResponseInfo, ToolCall, content_text, error_message,
};
use super::usage::{Usage, num};

/// Parses a generateContent request body; the model comes from the path.
pub fn parse_request(v: &Value, path_model: Option<&str>, stream: bool) -> RequestInfo {
    let mut p = PromptBuilder::default();
    if let Some(si) = v
        .get("systemInstruction")
        .or_else(|| v.get("system_instruction"))
    {
        p.add("system", &parts_text(si.get("parts")));
    }
    for c in v
        .get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = c.get("role").and_then(Value::as_str).unwrap_or("user");
        p.add(role, &parts_text(c.get("parts")));
    }
    let cfg = v
        .get("generationConfig")
        .or_else(|| v.get("generation_config"));
    RequestInfo {
        model: path_model.map(str::to_owned),
        stream,
        include_usage: true,
        max_tokens: cfg
            .and_then(|c| num(c, "maxOutputTokens").or_else(|| num(c, "max_output_tokens"))),
        temperature: cfg
            .and_then(|c| c.get("temperature"))
            .and_then(Value::as_f64),
        tools: v
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|t| {
                t.get("functionDeclarations")
                    .or_else(|| t.get("function_declarations"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect(),
        prompt: p.text,
        prompt_truncated: p.truncated,
    }
}

fn parts_text(parts: Option<&Value>) -> String {
    let mut out = Vec::new();
    for part in parts.and_then(Value::as_array).into_iter().flatten() {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            out.push(t.to_owned());
        } else if let Some(fc) = part.get("functionCall") {
            let name = fc.get("name").and_then(Value::as_str).unwrap_or("?");
            out.push(format!(
                "[tool_call {name}({})]",
                fc.get("args").map(Value::to_string).unwrap_or_default()
            ));
        } else if let Some(fr) = part.get("functionResponse") {
            out.push(content_text(fr.get("response").unwrap_or(&Value::Null)).into_owned());
        } else if let Some(k) = part.as_object().and_then(|o| o.keys().next()) {
            out.push(format!("[{k}]"));
        }
    }
    out.join("\n")
}

// Field names mirror the wire format.
#[allow(clippy::struct_field_names)]
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct GUsage {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
}

/// Accumulator for Gemini responses.
#[derive(Debug, Default)]
pub struct GeminiAcc {
    pub info: ResponseInfo,
}

impl GeminiAcc {
    /// One stream element (SSE `data` or JSON array element) or a whole body.
    pub fn document(&mut self, data: &str) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            self.info.parse_errors += 1;
            return;
        };
        // A whole JSON-array body given at once.
        if let Value::Array(items) = &v {
            for item in items {
                self.element(item);
            }
            return;
        }
        self.element(&v);
    }

    fn element(&mut self, v: &Value) {
        if let Some(e) = error_message(v) {
            self.info.error = Some(e);
            self.info.terminal = true;
            return;
        }
        self.info
            .set_id(v.get("responseId").and_then(Value::as_str));
        self.info
            .set_model(v.get("modelVersion").and_then(Value::as_str));
        if let Some(u) = v
            .get("usageMetadata")
            .and_then(|u| GUsage::deserialize(u).ok())
        {
            self.info.usage = Usage {
                input: u.prompt_token_count,
                output: match (u.candidates_token_count, u.thoughts_token_count) {
                    (None, None) => None,
                    (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
                },
                cached_input: u.cached_content_token_count,
                cache_write: None,
                reasoning: u.thoughts_token_count,
                estimated: false,
            };
        }
        let Some(cand) = v
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return;
        };
        if let Some(r) = cand.get("finishReason").and_then(Value::as_str) {
            // Gemini has no end event: the element whose candidate carries a finish reason
            // (with the final usage) is the last one.
            self.info.finish_reason = Some(r.to_owned());
            self.info.terminal = true;
        }
        for part in cand
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.part(part);
        }
    }

    fn part(&mut self, part: &Value) {
        if let Some(fc) = part.get("functionCall") {
            self.info.tool_calls.push(ToolCall {
                id: fc.get("id").and_then(Value::as_str).map(str::to_owned),
                name: fc
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                arguments: fc.get("args").map(Value::to_string).unwrap_or_default(),
            });
        } else if let Some(t) = part.get("text").and_then(Value::as_str) {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                self.info.push_reasoning(t);
            } else {
                self.info.push_text(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn request_and_thoughts() {
        let v = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "systemInstruction": {"parts": [{"text": "sys"}]},
            "generationConfig": {"maxOutputTokens": 64, "temperature": 0.5},
            "tools": [{"functionDeclarations": [{"name": "lookup"}]}]});
        let r = parse_request(&v, Some("gemini-2.5-flash"), false);
        assert_eq!(r.prompt, "system: sys\nuser: hi");
        assert_eq!((r.max_tokens, r.tools.len()), (Some(64), 1));
        let mut a = GeminiAcc::default();
        a.document(r#"{"candidates":[{"content":{"parts":[{"text":"think","thought":true},{"text":"ans"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"thoughtsTokenCount":5}}"#);
        assert_eq!(
            (a.info.text.as_str(), a.info.reasoning.as_str()),
            ("ans", "think")
        );
        assert_eq!(
            (a.info.usage.output, a.info.usage.reasoning),
            (Some(7), Some(5))
        );
    }
}
