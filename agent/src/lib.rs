//! llmtrace agent: transparent interception of LLM API traffic on a host.

pub mod analysis;
pub mod cli;
pub mod llm;
