//! Metrics the engine in force keeps itself, read when scraped: after a policy reload they
//! show the new engine, which carries its predecessor's learned-model chunk cache over, so
//! the counts keep counting.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter},
};

use super::reload::EngineSlot;

/// The collector, over the slot the proxy takes its engine from.
#[derive(Debug)]
pub struct EngineMetrics(pub Arc<EngineSlot>);

impl Collector for EngineMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Nothing while the learned model or its cache is off: a zero would read as a cache
        // that never hits.
        let Some(counts) = self
            .0
            .current()
            .and_then(|e| e.analyzer().learned_cache_counts())
        else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "llm_learned_cache_lookups",
                "Prompt chunks of 1 KiB or more the learned injection model looked up in its \
                 chunk cache (scans beside the data path)",
                counts.lookups,
            ),
            (
                "llm_learned_cache_hits",
                "Lookups answered from the chunk cache (a chunk scored recently, such as a \
                 conversation's resent history)",
                counts.hits,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{Action, Location, PolicyConfig};
    use crate::llm::{Engine, LlmConfig};
    use prometheus_client::registry::Registry;

    fn scrape(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    fn value(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn counts_the_cache_and_keep_counting_across_a_policy_reload() {
        let slot = Arc::new(EngineSlot::new(Some(Engine::new(
            LlmConfig::default(),
            b"k",
        ))));
        let mut registry = Registry::with_prefix("llmtrace");
        registry.register_collector(Box::new(EngineMetrics(slot.clone())));
        let prompt = "Please summarise the quarterly report for the board. ".repeat(100);
        let scan = || {
            let engine = slot.current().unwrap();
            let a = engine.analyzer();
            a.scan_text_beside_path(&prompt, Location::Request, &mut a.budget());
        };
        scan();
        scan();
        let text = scrape(&registry);
        let lookups = value(&text, "llmtrace_llm_learned_cache_lookups_total").unwrap();
        let hits = value(&text, "llmtrace_llm_learned_cache_hits_total").unwrap();
        assert!(lookups >= 2 && hits >= 1 && hits < lookups, "{text}");
        // A new policy: a new engine, the same remembered scores.
        let policy = PolicyConfig {
            default_action: Action::Allow,
            ..PolicyConfig::default()
        };
        let before = slot.current().unwrap();
        slot.replace_policy(&policy);
        assert!(
            !Arc::ptr_eq(&before, &slot.current().unwrap()),
            "a new engine"
        );
        scan();
        let text = scrape(&registry);
        assert!(value(&text, "llmtrace_llm_learned_cache_hits_total").unwrap() > hits);
        assert!(value(&text, "llmtrace_llm_learned_cache_lookups_total").unwrap() > lookups);
    }

    #[test]
    fn says_nothing_when_the_cache_is_off() {
        let mut config = LlmConfig::default();
        config.analysis.learned_cache_chunks = 0;
        let slot = Arc::new(EngineSlot::new(Some(Engine::new(config, b"k"))));
        let mut registry = Registry::with_prefix("llmtrace");
        registry.register_collector(Box::new(EngineMetrics(slot)));
        assert!(!scrape(&registry).contains("learned_cache"));
    }
}
