//! `ExchangeAnalysis`: everything the trace row needs from the LLM tee, field names matching the
//! trace columns.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::ToolCall;
use super::progress::Progress;
use super::provider::{ApiKind, Provider};
use super::usage::Usage;
use crate::analysis::{Action, Finding};

/// The analysis of one exchange.
// The trace row has independent completeness flags; an enum would not fit them.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExchangeAnalysis {
    /// `Unknown` when recognised only by the request's shape.
    #[serde(serialize_with = "provider_name")]
    pub provider: Provider,
    pub api: ApiKind,
    /// Requested model (body, else Gemini path model, else Azure deployment).
    pub model: Option<String>,
    /// Model named in the response.
    pub response_model: Option<String>,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    /// Tools offered in the request.
    pub tools: Vec<String>,
    pub status: Option<u16>,
    pub ttft_ms: Option<f64>,
    pub first_byte_ms: Option<f64>,
    pub inter_chunk_p50_ms: Option<f64>,
    pub inter_chunk_max_ms: Option<f64>,
    pub chunks: u64,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Token counts by kind (`input`, `output`, `cached_input`, `cache_write`, `reasoning`).
    pub tokens: BTreeMap<&'static str, u64>,
    pub usage_estimated: bool,
    #[serde(skip)]
    pub usage: Usage,
    /// `None` when the model or counts are unknown (never a made-up zero).
    pub cost_usd: Option<f64>,
    pub tool_calls: Vec<ToolCall>,
    pub findings: Vec<Finding>,
    /// Enforced action.
    pub action: Action,
    pub prompt: String,
    pub response_text: String,
    pub finish_reason: Option<String>,
    /// Provider request id (response header), else the response/message id.
    pub request_id: Option<String>,
    pub api_key_fingerprint: Option<String>,
    /// Error reported by the provider, or why the body could not be analysed.
    pub error: Option<String>,
    /// The request body given was incomplete (capture bound hit).
    pub request_truncated: bool,
    /// The response body given was incomplete, or a document or text bound was hit.
    pub response_truncated: bool,
    /// Some text was longer than the analysis limit and was analysed only up to it.
    pub analysis_truncated: bool,
    /// The stream was ended early by the monitor.
    pub early_stopped: bool,
    /// Every text kept here (prompt, response, tool-call arguments) went whole through the
    /// secret detectors and was masked: storing it needs no second scan. Not a column: it
    /// only spares the row mapping that work.
    #[serde(skip)]
    pub stored_text_masked: bool,
    pub parse_errors: u32,
    /// How far the response got (events, terminal event). Not a column of its own: when the
    /// app closes before the body's end it decides the row's error, completeness and duration.
    #[serde(skip)]
    pub progress: Progress,
}

/// The provider as the trace row names it.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` passes a reference
fn provider_name<S: serde::Serializer>(p: &Provider, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}
