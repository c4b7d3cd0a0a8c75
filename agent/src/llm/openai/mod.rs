//! OpenAI dialect: chat completions, legacy completions, embeddings and the Responses API. Also
//! spoken by Azure OpenAI and the OpenAI-compatible providers.

mod chat;
mod chunk_scan;
mod request;
mod request_direct;
mod responses;

use serde::Deserialize;
use serde_json::Value;

pub use chat::ChatAcc;
pub use request::parse_request;
pub use request_direct::read_request;
pub use responses::ResponsesAcc;

use crate::llm::usage::{Usage, num};

/// OpenAI usage (chat and Responses field names both accepted).
#[derive(Debug, Default, PartialEq, Deserialize)]
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
