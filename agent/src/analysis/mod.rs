//! Findings and enforcement on LLM traffic: secrets, PII, prompt injection / jailbreak and risky
//! tool call detectors ([`Analyzer`]), the policy mapping findings to actions
//! ([`PolicyConfig`]), request redaction ([`redact_body`]), provider-shaped refusals
//! ([`block_response`], [`stream_error_event`]) and the streaming monitor ([`StreamMonitor`]).
//!
//! Findings carry a masked excerpt and never the matched text. One trigger pass per text (SIMD
//! literal search for every required literal, and a digit skim) tells where detectors could
//! match; their linear-time regexes run only there, over at most
//! [`AnalysisConfig::max_analysis_bytes`] per text.

pub mod analyzer;
pub mod block;
#[cfg(test)]
mod equivalence_tests;
pub mod finding;
pub mod injection;
pub mod monitor;
mod patterns;
pub mod pii;
pub mod policy;
pub mod redact;
pub mod secrets;
pub mod tools;
mod triggers;

use serde::{Deserialize, Serialize};

pub use analyzer::{Analyzer, Scan};
pub use block::{BlockResponse, Refusal, block_response, refusal_response, stream_error_event};
pub use finding::{Finding, Location, Severity};
pub use monitor::StreamMonitor;
pub use policy::{Action, PolicyConfig, PolicyRule};
pub use redact::{Redacted, mask_findings, must_mask, redact_body};

/// Analysis settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Run the detectors at all. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Bytes of each text (prompt, response, tool arguments) analysed; the rest is skipped and
    /// the trace marked. Default: 262144 (256 KiB).
    #[serde(default = "default_max_analysis_bytes")]
    pub max_analysis_bytes: usize,
    /// Watch streamed responses and end the stream on a finding the policy blocks.
    /// Default: true.
    #[serde(default = "default_true")]
    pub stream_monitor: bool,
    /// Finding → action policy. Default: flag everything.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// A request body that does not decode or is not JSON: `allow`, `flag` or `block`.
    /// Default: flag.
    #[serde(default)]
    pub on_unparsed: policy::OnUnparsed,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_analysis_bytes: default_max_analysis_bytes(),
            stream_monitor: true,
            policy: PolicyConfig::default(),
            on_unparsed: policy::OnUnparsed::Flag,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_max_analysis_bytes() -> usize {
    256 * 1024
}
