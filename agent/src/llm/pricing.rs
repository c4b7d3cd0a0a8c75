//! Cost from a versioned pricing table (`agent/pricing.toml`, embedded), overridable by config.
//! An unknown model has an unknown cost (`None`), never zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::usage::Usage;

const BUILTIN: &str = include_str!("../../pricing.toml");

/// Prices of one model in USD per 1M tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Date from which these prices apply (informational, `YYYY-MM-DD`).
    #[serde(default)]
    pub effective: String,
    /// Uncached input tokens.
    pub input: f64,
    /// Output tokens (reasoning included).
    pub output: f64,
    /// Cache-read input tokens; defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Cache-write input tokens (Anthropic); defaults to `input`.
    #[serde(default)]
    pub cache_write: Option<f64>,
}

/// Pricing overrides in the agent config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    /// Model id → prices, replacing or extending the built-in table. Default: none.
    #[serde(default)]
    pub models: BTreeMap<String, ModelPrice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    version: String,
    models: BTreeMap<String, ModelPrice>,
}

/// Errors loading a pricing table.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("invalid pricing table: {0}")]
    Parse(#[from] toml::de::Error),
}

/// The pricing table.
#[derive(Debug, Clone)]
pub struct PriceTable {
    version: String,
    models: BTreeMap<String, ModelPrice>,
}

impl PriceTable {
    /// The built-in table shipped with the agent.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN).expect("built-in pricing.toml is valid")
    }

    /// Parses a table in the `pricing.toml` format.
    pub fn parse(text: &str) -> Result<Self, PricingError> {
        let f: PriceFile = toml::from_str(text)?;
        Ok(Self {
            version: f.version,
            models: f.models,
        })
    }

    /// Applies config overrides.
    #[must_use]
    pub fn with_overrides(mut self, config: &PricingConfig) -> Self {
        for (k, v) in &config.models {
            self.models.insert(k.clone(), v.clone());
        }
        self
    }

    /// Table version string.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Prices for a model id, tolerating provider prefixes and dated snapshot suffixes.
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        let model = model.rsplit('/').next().unwrap_or(model);
        if let Some(p) = self.models.get(model) {
            return Some(p);
        }
        // Longest listed id that is a prefix followed by '-' (e.g. "gpt-4o-2024-08-06"): the
        // text before each '-', from the last one, one map lookup each (not a pass over the
        // table, which this runs for every exchange).
        model
            .rmatch_indices('-')
            .find_map(|(i, _)| self.models.get(&model[..i]))
    }

    /// The model to price an exchange by: the one the provider says it served when the table
    /// knows it (a request for an alias, a deployment name or a router can be served by
    /// another model), else the requested one.
    pub fn priced_model<'a>(
        &self,
        served: Option<&'a str>,
        requested: Option<&'a str>,
    ) -> Option<&'a str> {
        served.filter(|m| self.lookup(m).is_some()).or(requested)
    }

    /// Cost in USD, `None` when the model or the token counts are unknown.
    pub fn cost(&self, model: Option<&str>, usage: &Usage) -> Option<f64> {
        let p = self.lookup(model?)?;
        let input = usage.input?;
        let output = usage.output.unwrap_or(0);
        let cached = usage.cached_input.unwrap_or(0);
        let write = usage.cache_write.unwrap_or(0);
        let plain = input.saturating_sub(cached).saturating_sub(write);
        // Token counts stay far below 2^52, so the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let per = |n: u64, price: f64| n as f64 * price / 1_000_000.0;
        Some(
            per(plain, p.input)
                + per(cached, p.cached_input.unwrap_or(p.input))
                + per(write, p.cache_write.unwrap_or(p.input))
                + per(output, p.output),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cached: u64) -> Usage {
        Usage {
            input: Some(input),
            output: Some(output),
            cached_input: Some(cached),
            ..Usage::default()
        }
    }

    #[test]
    fn builtin_parses_and_prices() {
        let t = PriceTable::builtin();
        assert!(!t.version().is_empty());
        let c = t
            .cost(Some("gpt-4o-2024-08-06"), &usage(1_000_000, 1_000_000, 0))
            .unwrap();
        assert!((c - 12.5).abs() < 1e-9);
        // gpt-4o-mini must not fall back to gpt-4o.
        let c = t
            .cost(Some("gpt-4o-mini"), &usage(1_000_000, 0, 0))
            .unwrap();
        assert!((c - 0.15).abs() < 1e-9);
        let c = t
            .cost(Some("gpt-4o"), &usage(1_000_000, 0, 500_000))
            .unwrap();
        assert!((c - (1.25 + 0.625)).abs() < 1e-9);
        assert!(t.lookup("openai/gpt-4o").is_some());
        assert!(t.lookup("claude-3-5-sonnet-20241022").is_some());
    }

    #[test]
    fn a_snapshot_is_priced_as_its_longest_listed_prefix() {
        let t = PriceTable::builtin();
        // The definition: the longest listed id followed by '-' in the name.
        let by_scan = |model: &str| {
            t.models
                .iter()
                .filter(|(k, _)| {
                    model.len() > k.len()
                        && model.starts_with(k.as_str())
                        && model.as_bytes()[k.len()] == b'-'
                })
                .max_by_key(|(k, _)| k.len())
                .map(|(_, p)| p)
        };
        for k in t.models.keys() {
            for name in [
                format!("{k}-2024-08-06"),
                format!("{k}-"),
                format!("{k}-mini-x"),
            ] {
                if !t.models.contains_key(&name) {
                    assert_eq!(t.lookup(&name), by_scan(&name), "{name}");
                }
            }
        }
        assert_eq!(t.lookup("-"), None);
        assert_eq!(t.lookup("gpt"), None);
    }

    #[test]
    fn unknown_model_is_unknown_not_zero() {
        let t = PriceTable::builtin();
        assert_eq!(t.cost(Some("my-finetune"), &usage(10, 10, 0)), None);
        assert_eq!(t.cost(None, &usage(10, 10, 0)), None);
        assert_eq!(t.cost(Some("gpt-4o"), &Usage::default()), None);
    }

    #[test]
    fn priced_by_the_served_model_when_known() {
        let t = PriceTable::builtin();
        let u = usage(1_000_000, 0, 0);
        // A router answered a gpt-4o request with gpt-4o-mini: the mini's price.
        let m = t.priced_model(Some("gpt-4o-mini-2024-07-18"), Some("gpt-4o"));
        assert_eq!(m, Some("gpt-4o-mini-2024-07-18"));
        assert!((t.cost(m, &u).unwrap() - 0.15).abs() < 1e-9);
        // A served name the table does not know falls back to the requested model.
        let m = t.priced_model(Some("my-private-snapshot"), Some("gpt-4o"));
        assert!((t.cost(m, &u).unwrap() - 2.5).abs() < 1e-9);
        // An Azure deployment name is not a model; the served model prices it.
        let m = t.priced_model(Some("gpt-4o-2024-11-20"), Some("gpt4o-prod"));
        assert!((t.cost(m, &u).unwrap() - 2.5).abs() < 1e-9);
        assert_eq!(t.priced_model(None, Some("gpt-4o")), Some("gpt-4o"));
        assert_eq!(t.priced_model(Some("nobody-knows"), None), None);
    }

    #[test]
    fn overrides_apply() {
        let cfg: PricingConfig =
            toml::from_str("[models.my-finetune]\ninput = 1.0\noutput = 2.0\n").unwrap();
        let t = PriceTable::builtin().with_overrides(&cfg);
        let c = t
            .cost(Some("my-finetune"), &usage(1_000_000, 1_000_000, 0))
            .unwrap();
        assert!((c - 3.0).abs() < 1e-9);
        assert!(toml::from_str::<PricingConfig>("[models.x]\ninput=1\noutput=1\nbogus=1").is_err());
    }
}
