//! Canary tokens: strings an operator plants (in a system prompt, a document, a fake
//! credential) that must never leave in a request nor come back in a response. Any occurrence
//! is a `critical` `canary.leak` finding naming the canary, never holding its value.
//!
//! ```toml
//! [[llm.analysis.canary]]
//! name = "support-bot-system-prompt"
//! value = "zebra-7f3k-orchid"
//! ```

use aho_corasick::{AhoCorasick, MatchKind};
use serde::{Deserialize, Serialize};

use super::finding::{Finding, Location, Severity};

/// The finding kind.
pub const KIND: &str = "canary.leak";

/// Shortest accepted canary value: shorter strings occur by chance.
pub const MIN_VALUE_BYTES: usize = 8;

/// One configured canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Name stored in findings in place of the value.
    pub name: String,
    /// The exact string (case-sensitive), at least 8 bytes.
    pub value: String,
}

/// Checks names (non-empty, distinct) and values (long enough, distinct).
pub fn check(canaries: &[CanaryConfig]) -> Result<(), String> {
    for (i, c) in canaries.iter().enumerate() {
        if c.name.trim().is_empty() {
            return Err(format!("canary {i}: name must not be empty"));
        }
        if c.value.len() < MIN_VALUE_BYTES {
            return Err(format!(
                "canary {:?}: value must be at least {MIN_VALUE_BYTES} bytes",
                c.name
            ));
        }
        if canaries[..i]
            .iter()
            .any(|p| p.name == c.name || p.value == c.value)
        {
            return Err(format!("canary {:?}: name or value repeated", c.name));
        }
    }
    Ok(())
}

/// The compiled canaries.
#[derive(Debug, Default)]
pub struct Canaries {
    names: Vec<String>,
    /// `None` when none are configured (no pass over the text at all).
    matcher: Option<AhoCorasick>,
}

impl Canaries {
    pub fn new(canaries: &[CanaryConfig]) -> Self {
        if canaries.is_empty() {
            return Self::default();
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(canaries.iter().map(|c| c.value.as_bytes()))
            .ok();
        Self {
            names: canaries.iter().map(|c| c.name.clone()).collect(),
            matcher,
        }
    }

    /// Appends a finding per occurrence of a canary in `text`.
    pub fn scan(&self, text: &str, location: Location, out: &mut Vec<Finding>) {
        let Some(m) = &self.matcher else {
            return;
        };
        for hit in m.find_iter(text) {
            out.push(Finding {
                kind: KIND,
                severity: Severity::Critical,
                confidence: 1.0,
                location,
                excerpt: format!("canary:{}", self.names[hit.pattern().as_usize()]),
                span: hit.range(),
                view: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, value: &str) -> CanaryConfig {
        CanaryConfig {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn finds_by_name_never_value() {
        let c = Canaries::new(&[cfg("sys", "zebra-7f3k-orchid")]);
        let mut out = Vec::new();
        c.scan(
            "the prompt says zebra-7f3k-orchid.",
            Location::Response,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].kind, out[0].severity), (KIND, Severity::Critical));
        assert_eq!(out[0].excerpt, "canary:sys");
        assert_eq!(out[0].span, 16..33);
        out.clear();
        c.scan("ZEBRA-7F3K-ORCHID", Location::Request, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn config_checked() {
        assert!(check(&[cfg("a", "12345678")]).is_ok());
        assert!(check(&[cfg("", "12345678")]).is_err());
        assert!(check(&[cfg("a", "short")]).is_err());
        assert!(check(&[cfg("a", "12345678"), cfg("a", "87654321")]).is_err());
    }
}
