//! The shared, immutable analysis engine: compiled detectors, policy, prices, limits and the
//! fingerprint key. Built once at startup; every exchange borrows it through an `Arc`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::decode::DecodeLimits;
use super::fingerprint::Fingerprinter;
use super::pricing::{PriceTable, PricingConfig};
use crate::analysis::{AnalysisConfig, Analyzer};

/// LLM tee settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Detectors and policy. Default: see [`AnalysisConfig`].
    #[serde(default)]
    pub analysis: AnalysisConfig,
    /// Pricing overrides. Default: none (built-in table).
    #[serde(default)]
    pub pricing: PricingConfig,
    /// Largest JSON document or SSE line parsed from a response; bigger ones are skipped and the
    /// trace marked. Default: 8388608 (8 MiB).
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: usize,
    /// Largest decoded (decompressed) body analysed. Default: 16777216 (16 MiB).
    #[serde(default = "default_max_decoded_bytes")]
    pub max_decoded_bytes: usize,
    /// Largest decompression ratio accepted before a body is treated as a bomb. Default: 200.
    #[serde(default = "default_max_ratio")]
    pub max_decompression_ratio: usize,
    /// Secret shared by a fleet (e.g. a mounted Kubernetes Secret, 32+ bytes, not readable by
    /// other users) keying API key fingerprints, so a key has the same fingerprint on every host.
    /// Default: none (the per-host `state_dir/fingerprint.key`).
    #[serde(default)]
    pub fingerprint_key_file: Option<std::path::PathBuf>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            analysis: AnalysisConfig::default(),
            pricing: PricingConfig::default(),
            max_document_bytes: default_max_document_bytes(),
            max_decoded_bytes: default_max_decoded_bytes(),
            max_decompression_ratio: default_max_ratio(),
            fingerprint_key_file: None,
        }
    }
}

fn default_max_document_bytes() -> usize {
    8 << 20
}

fn default_max_decoded_bytes() -> usize {
    16 << 20
}

fn default_max_ratio() -> usize {
    200
}

/// Compiled engine.
#[derive(Debug)]
pub struct Engine {
    pub(crate) config: LlmConfig,
    pub(crate) analyzer: Analyzer,
    pub(crate) prices: PriceTable,
    /// API key fingerprints under the per-host secret.
    pub(crate) fingerprints: Fingerprinter,
}

impl Engine {
    /// Builds the engine; `fingerprint_key` is the per-host secret for API key fingerprints.
    pub fn new(config: LlmConfig, fingerprint_key: &[u8]) -> Arc<Self> {
        Arc::new(Self::build(config, Fingerprinter::new(fingerprint_key)))
    }

    fn build(config: LlmConfig, fingerprints: Fingerprinter) -> Self {
        Self {
            analyzer: Analyzer::from_config(&config.analysis),
            prices: PriceTable::builtin().with_overrides(&config.pricing),
            config,
            fingerprints,
        }
    }

    /// This engine with `policy` instead of its own, keeping what its learned model
    /// remembered (chunk scores depend on the text, not on the policy).
    pub fn with_policy(&self, policy: &crate::analysis::PolicyConfig) -> Arc<Self> {
        let mut config = self.config.clone();
        config.analysis.policy = policy.clone();
        let mut engine = Self::build(config, self.fingerprints.clone());
        engine.analyzer.keep_learned_cache_of(&self.analyzer);
        Arc::new(engine)
    }

    /// The detectors (shared with the offline `analyze` command).
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// The pricing table in use.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    pub(crate) fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_output: self.config.max_decoded_bytes,
            max_ratio: self.config.max_decompression_ratio,
        }
    }
}
