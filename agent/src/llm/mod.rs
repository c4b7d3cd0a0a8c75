//! The LLM tee: provider detection, request/response parsing (JSON and SSE, every supported
//! provider), usage, timing, cost, and the per-exchange API the proxy drives.
//!
//! # Proxy API
//!
//! ```no_run
//! # use std::time::Instant;
//! use llmtrace_agent::llm::{Engine, Exchange, LlmConfig, RequestHead};
//!
//! let engine = Engine::new(LlmConfig::default(), b"per-host fingerprint key");
//! let headers = [("content-type", "application/json"), ("authorization", "Bearer sk-…")];
//! let head = RequestHead { method: "POST", host: "api.openai.com", path: "/v1/chat/completions",
//!                          query: None, headers: &headers };
//! if let Some(mut ex) = Exchange::start(&engine, &head, Instant::now()) {
//!     // Request phase (inline): the bounded body exactly as received.
//!     let verdict = ex.request_body(br#"{"model":"gpt-4o","messages":[]}"#, true);
//!     // verdict.block → send it instead; verdict.redacted_body → forward it instead.
//!     ex.response_head(200, &[("content-type", "text/event-stream")]);
//!     // For every body chunk, after (or while) forwarding it:
//!     if let Some(stop) = ex.response_chunk(b"data: {}\n\n", Instant::now()) {
//!         // write stop.event to the client and end the body
//!     }
//!     let analysis = ex.finish(); // → trace row fields
//! }
//! ```
//!
//! Bodies are fed as forwarded: the exchange undoes `Content-Encoding` itself, for analysis only
//! and within the decompression bounds. Parsers never read the clock; every time comes from the
//! caller. Nothing here stores credential headers: the API key is kept only as a keyed
//! fingerprint.

pub mod anthropic;
pub mod block;
pub mod body;
mod borrowed;
pub mod decode;
#[cfg(test)]
mod detect_tests;
#[cfg(test)]
mod enforce_tests;
pub mod engine;
pub mod exchange;
pub mod fingerprint;
mod finish;
#[cfg(test)]
mod fixture_tests;
pub mod gemini;
pub mod model;
pub mod openai;
pub mod outcome;
pub mod pricing;
pub mod progress;
#[cfg(test)]
mod prop_tests;
pub mod provider;
pub mod sse;
pub mod timing;
pub mod unparsed;
pub mod usage;

pub use block::{BlockResponse, Refusal, block_response, refusal_response, stream_error_event};
pub use engine::{Engine, LlmConfig};
pub use exchange::{EarlyStop, Exchange, HeaderLookup, RequestHead, RequestVerdict};
pub use model::{RequestInfo, ResponseInfo, ToolCall};
pub use outcome::ExchangeAnalysis;
pub use progress::Progress;
pub use provider::{ApiKind, Dialect, Endpoint, Provider};
pub use usage::Usage;
