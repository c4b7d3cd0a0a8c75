//! llmtrace agent: transparent interception of LLM API traffic on a host.

pub mod cli;
pub mod sink;
