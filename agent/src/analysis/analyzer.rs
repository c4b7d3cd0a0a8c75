//! The detector bundle with its input bound. One trigger pass per text serves every detector
//! (see [`super::triggers`]). Time is bounded through size: every detector is linear in its
//! input, and input beyond `max_bytes` is not analysed (the scan is marked truncated).

use super::finding::{Finding, Location};
use super::injection::InjectionDetector;
use super::pii::PiiDetector;
use super::secrets::SecretDetector;
use super::tools::ToolDetector;
use super::triggers::TriggerSet;

/// The result of scanning one text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    pub findings: Vec<Finding>,
    /// The text was longer than the analysis limit; the rest was not analysed.
    pub truncated: bool,
}

/// All detectors, compiled once and shared (`Sync`).
#[derive(Debug)]
pub struct Analyzer {
    pub secrets: SecretDetector,
    pub pii: PiiDetector,
    pub injection: InjectionDetector,
    pub tools: ToolDetector,
    /// Every text detector's literals and the digit runs, found in one pass.
    triggers: TriggerSet,
    max_bytes: usize,
}

impl Analyzer {
    /// Detectors analysing at most `max_bytes` of each text.
    pub fn new(max_bytes: usize) -> Self {
        let secrets = SecretDetector::default();
        let pii = PiiDetector::default();
        let injection = InjectionDetector::default();
        let triggers = TriggerSet::new(
            secrets
                .literals()
                .chain(pii.literals())
                .chain(injection.literals()),
            true,
        );
        Self {
            secrets,
            pii,
            injection,
            tools: ToolDetector::default(),
            triggers,
            max_bytes,
        }
    }

    /// The analysis limit in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Cuts `text` to the limit on a char boundary.
    pub fn bounded<'a>(&self, text: &'a str) -> (&'a str, bool) {
        if text.len() <= self.max_bytes {
            return (text, false);
        }
        let mut cut = self.max_bytes;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        (&text[..cut], true)
    }

    /// Runs the text detectors (secrets, PII, injection).
    pub fn scan_text(&self, text: &str, location: Location) -> Scan {
        let (text, truncated) = self.bounded(text);
        let triggers = self.triggers.find(text.as_bytes());
        let mut findings = Vec::new();
        self.secrets
            .scan_triggered(text, &triggers, location, &mut findings);
        self.pii
            .scan_triggered(text, &triggers, location, &mut findings);
        self.injection
            .scan_triggered(&triggers, location, &mut findings);
        Scan {
            findings,
            truncated,
        }
    }

    /// Runs the detectors that can be masked (secrets, PII): used for redaction.
    pub fn scan_maskable(&self, text: &str, location: Location, out: &mut Vec<Finding>) {
        let (text, _) = self.bounded(text);
        let triggers = self.triggers.find(text.as_bytes());
        self.secrets.scan_triggered(text, &triggers, location, out);
        self.pii.scan_triggered(text, &triggers, location, out);
    }

    /// Scans a tool call: risky-tool rules plus secrets and PII in its arguments.
    pub fn scan_tool_call(&self, name: &str, arguments: &str) -> Scan {
        let (args, truncated) = self.bounded(arguments);
        let mut findings = Vec::new();
        self.tools
            .scan(name, args, Location::ToolCall, &mut findings);
        let triggers = self.triggers.find(args.as_bytes());
        self.secrets
            .scan_triggered(args, &triggers, Location::ToolCall, &mut findings);
        self.pii
            .scan_triggered(args, &triggers, Location::ToolCall, &mut findings);
        Scan {
            findings,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_marks_truncation_and_skips_the_rest() {
        let a = Analyzer::new(32);
        let text = format!("{}AKIAIOSFODNN7EXAMPLE", "x ".repeat(20));
        let s = a.scan_text(&text, Location::Request);
        assert!(s.truncated && s.findings.is_empty());
        let s = Analyzer::new(1 << 20).scan_text(&text, Location::Request);
        assert!(!s.truncated && s.findings.len() == 1);
    }

    #[test]
    fn common_benign_tokens_are_quiet() {
        let a = Analyzer::new(1 << 20);
        for text in [
            "request id 550e8400-e29b-41d4-a716-446655440000 done",
            "commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
            "timestamp 1741570283 and 2026-11-27T10:15:02Z, version 1.95.0, port 8443",
            "def f(x): return x * 2  # ignore the previous value",
        ] {
            let s = a.scan_text(text, Location::Request);
            assert!(s.findings.is_empty(), "{text}: {:?}", s.findings);
        }
    }

    #[test]
    fn bounded_respects_char_boundaries() {
        let a = Analyzer::new(3);
        assert_eq!(a.bounded("aéb"), ("aé", true));
    }
}
