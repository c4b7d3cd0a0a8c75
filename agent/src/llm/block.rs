//! Provider-shaped refusals: a 403 error body the client SDK understands, and an SSE error event
//! that ends a stream early. Messages name the finding kinds, never the matched text.

use super::provider::Dialect;

use crate::analysis::Finding;

/// A synthetic response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Seconds for a `Retry-After` header (rate and budget refusals).
    pub retry_after_s: Option<u64>,
}

/// Why a request is refused, which picks the status and the provider's error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A policy or approval block: 403.
    Forbidden,
    /// A rate limit or exhausted budget: 429, so SDKs back off.
    RateLimited,
    /// A per-request cap (`max_tokens`, input size): 400, since retrying cannot help.
    Invalid,
}

/// The human message for a block, naming the finding kinds.
pub fn block_message(findings: &[&Finding]) -> String {
    let mut kinds: Vec<&str> = findings.iter().map(|f| f.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    format!("Blocked by llmtrace policy: {}", kinds.join(", "))
}

fn error_json(dialect: Dialect, message: &str) -> serde_json::Value {
    refusal_json(dialect, Refusal::Forbidden, message)
}

fn refusal_json(dialect: Dialect, why: Refusal, message: &str) -> serde_json::Value {
    match (dialect, why) {
        (Dialect::OpenAi, Refusal::RateLimited) => serde_json::json!({
            "error": {"message": message, "type": "requests", "param": null, "code": "rate_limit_exceeded"}
        }),
        (Dialect::OpenAi, Refusal::Invalid) => serde_json::json!({
            "error": {"message": message, "type": "invalid_request_error", "param": null, "code": "llmtrace_limit"}
        }),
        (Dialect::Anthropic, Refusal::RateLimited) => serde_json::json!({
            "type": "error",
            "error": {"type": "rate_limit_error", "message": message}
        }),
        (Dialect::Anthropic, Refusal::Invalid) => serde_json::json!({
            "type": "error",
            "error": {"type": "invalid_request_error", "message": message}
        }),
        (Dialect::Gemini, Refusal::RateLimited) => serde_json::json!({
            "error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}
        }),
        (Dialect::Gemini, Refusal::Invalid) => serde_json::json!({
            "error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}
        }),
        (_, Refusal::Forbidden) => forbidden_json(dialect, message),
    }
}

fn forbidden_json(dialect: Dialect, message: &str) -> serde_json::Value {
    match dialect {
        Dialect::OpenAi => serde_json::json!({
            "error": {"message": message, "type": "policy_violation", "param": null, "code": "llmtrace_blocked"}
        }),
        Dialect::Anthropic => serde_json::json!({
            "type": "error",
            "error": {"type": "permission_error", "message": message}
        }),
        Dialect::Gemini => serde_json::json!({
            "error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}
        }),
    }
}

/// A 403 JSON error in the provider's shape.
pub fn block_response(dialect: Dialect, message: &str) -> BlockResponse {
    BlockResponse {
        status: 403,
        content_type: "application/json",
        body: error_json(dialect, message).to_string().into_bytes(),
        retry_after_s: None,
    }
}

/// A refusal in the provider's shape: 403, 429 (with `Retry-After`) or 400.
pub fn refusal_response(
    dialect: Dialect,
    why: Refusal,
    message: &str,
    retry_after_s: Option<u64>,
) -> BlockResponse {
    let status = match why {
        Refusal::Forbidden => 403,
        Refusal::RateLimited => 429,
        Refusal::Invalid => 400,
    };
    BlockResponse {
        status,
        content_type: "application/json",
        body: refusal_json(dialect, why, message).to_string().into_bytes(),
        retry_after_s: retry_after_s.filter(|_| why == Refusal::RateLimited),
    }
}

/// SSE bytes that end a stream with an error the SDKs raise: Anthropic `event: error`, OpenAI
/// and Gemini an `error` object in a `data:` line (OpenAI then `[DONE]`).
pub fn stream_error_event(dialect: Dialect, message: &str) -> Vec<u8> {
    let json = error_json(dialect, message).to_string();
    match dialect {
        Dialect::Anthropic => format!("event: error\ndata: {json}\n\n"),
        Dialect::OpenAi => format!("data: {json}\n\ndata: [DONE]\n\n"),
        Dialect::Gemini => format!("data: {json}\n\n"),
    }
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::sse::parse_all;

    #[test]
    fn shapes_parse_as_provider_errors() {
        let r = block_response(Dialect::Anthropic, "no");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (r.status, v["error"]["type"].as_str()),
            (403, Some("permission_error"))
        );
        let v: serde_json::Value =
            serde_json::from_slice(&block_response(Dialect::OpenAi, "no").body).unwrap();
        assert_eq!(v["error"]["message"], "no");
        let events = parse_all(&stream_error_event(Dialect::Anthropic, "stop"));
        assert_eq!(events[0].event, "error");
        let events = parse_all(&stream_error_event(Dialect::OpenAi, "stop"));
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].data, "[DONE]");
    }

    #[test]
    fn rate_limit_refusals_carry_retry_after() {
        let r = refusal_response(Dialect::OpenAi, Refusal::RateLimited, "slow", Some(7));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((r.status, r.retry_after_s), (429, Some(7)));
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        let r = refusal_response(Dialect::Anthropic, Refusal::RateLimited, "slow", Some(1));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let r = refusal_response(Dialect::Gemini, Refusal::Invalid, "big", Some(1));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((r.status, r.retry_after_s), (400, None));
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
        let r = refusal_response(Dialect::Gemini, Refusal::Forbidden, "no", None);
        assert_eq!(r, block_response(Dialect::Gemini, "no"));
    }
}
