//! Findings and enforcement on LLM traffic: secrets, PII, prompt injection / jailbreak and risky
//! tool call detectors ([`Analyzer`]), the policy mapping findings to actions
//! ([`PolicyConfig`]), request redaction ([`redact_body`]) and the streaming monitor
//! ([`StreamMonitor`]). The refusals an enforced action answers with are shaped per provider
//! dialect, so they live in [`crate::llm::block`].
//!
//! Findings carry a masked excerpt and never the matched text. One trigger pass per text (SIMD
//! literal search for every required literal, and a digit skim) tells where detectors could
//! match; their linear-time regexes run only there. Views undoing evasion (Unicode
//! normalisation, decoded segments, ROT13) are scanned too where a cheap check says they
//! differ ([`evasion`]), and configured canary tokens are matched ([`canary`]). Each exchange
//! is analysed newest text first within [`AnalysisConfig::max_analysis_bytes`] and
//! [`AnalysisConfig::max_analysis_ms`]; what is left over is an `analysis.incomplete`
//! finding.

pub mod analyzer;
pub mod canary;
#[cfg(test)]
mod equivalence_tests;
pub mod evasion;
#[cfg(test)]
mod evasion_tests;
pub mod finding;
pub mod injection;
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod lanes;
pub mod learned;
pub mod monitor;
mod patterns;
pub mod pii;
pub mod policy;
pub mod redact;
pub mod secrets;
pub mod tools;
mod triggers;

use serde::{Deserialize, Serialize};

pub use analyzer::{Analyzer, Budget, INCOMPLETE, Scan};
pub use canary::CanaryConfig;
pub use finding::{Finding, Location, Severity, View};
pub use monitor::StreamMonitor;
pub use patterns::TableDetector;
pub use policy::{Action, PolicyConfig, PolicyRule};
pub use redact::{Redacted, mask_findings, must_mask, redact_body};

/// Analysis settings.
// Each bool is an independent switch of the TOML file, not a state machine.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Run the detectors at all. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Bytes analysed per exchange (prompt, response, tool arguments, reasoning together),
    /// newest text first; text beyond is an `analysis.incomplete` finding and the trace is
    /// marked. Default: 16777216 (16 MiB, the largest decoded body).
    #[serde(default = "default_max_analysis_bytes")]
    pub max_analysis_bytes: usize,
    /// Time spent analysing one exchange at most, in ms (checked between 1 MiB windows);
    /// 0 = no time bound. Default: 250.
    #[serde(default = "default_max_analysis_ms")]
    pub max_analysis_ms: u64,
    /// Also scan views that undo evasion: Unicode NFKC, confusables, zero-width and bidi
    /// characters, decoded base64 / hex / URL-escaped segments, ROT13. Default: true.
    #[serde(default = "default_true")]
    pub evasion: bool,
    /// Run the learned prompt-injection / jailbreak detector next to the patterns (its
    /// findings are `injection.learned`). Default: true.
    #[serde(default = "default_true")]
    pub learned_detector: bool,
    /// Score (0–1, exclusive) at which the learned detector reports. Default: the threshold
    /// shipped in the model (chosen on the training script's validation split).
    #[serde(default)]
    pub learned_threshold: Option<f64>,
    /// Full chunks (4 KiB of prompt) whose learned scores are remembered, so a conversation's
    /// history, resent with every request, is scored once; 0 = score every chunk each time.
    /// Only scans beside the data path use them: a request scanned before it is forwarded is
    /// scored whole, since its client could time a remembered chunk. 32 bytes each.
    /// Default: 4096.
    #[serde(default = "default_learned_cache_chunks")]
    pub learned_cache_chunks: usize,
    /// Canary tokens that must never leave nor come back (`[[llm.analysis.canary]]`).
    /// Default: none.
    #[serde(default)]
    pub canary: Vec<CanaryConfig>,
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
            max_analysis_ms: default_max_analysis_ms(),
            evasion: true,
            learned_detector: true,
            learned_threshold: None,
            learned_cache_chunks: default_learned_cache_chunks(),
            canary: Vec::new(),
            stream_monitor: true,
            policy: PolicyConfig::default(),
            on_unparsed: policy::OnUnparsed::Flag,
        }
    }
}

fn default_learned_cache_chunks() -> usize {
    4096
}

/// The largest chunk-score table: 32 MiB.
const MAX_LEARNED_CACHE_CHUNKS: usize = 1 << 20;

fn default_true() -> bool {
    true
}

impl AnalysisConfig {
    /// Checks what serde cannot; `Err((key, problem))`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_analysis_bytes == 0 {
            return Err((
                "llm.analysis.max_analysis_bytes",
                "must be positive (set enabled = false to analyse nothing)".into(),
            ));
        }
        if let Some(t) = self.learned_threshold
            && !(t > 0.0 && t < 1.0)
        {
            return Err((
                "llm.analysis.learned_threshold",
                format!("{t} is not between 0 and 1 (exclusive)"),
            ));
        }
        if self.learned_cache_chunks > MAX_LEARNED_CACHE_CHUNKS {
            return Err((
                "llm.analysis.learned_cache_chunks",
                format!(
                    "{} is more than {MAX_LEARNED_CACHE_CHUNKS}",
                    self.learned_cache_chunks
                ),
            ));
        }
        if self.learned_detector {
            learned::Model::embedded().map_err(|e| ("llm.analysis.learned_detector", e.into()))?;
        }
        canary::check(&self.canary).map_err(|e| ("llm.analysis.canary", e))
    }
}

fn default_max_analysis_bytes() -> usize {
    16 << 20
}

fn default_max_analysis_ms() -> u64 {
    250
}
