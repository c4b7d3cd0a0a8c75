//! Streaming monitor: scans response text as deltas arrive and says when a finding the policy
//! blocks appears, so the proxy can end the stream. Text is scanned in slices of at least
//! `STEP` new bytes over a window that overlaps the previous slice, so a secret split across
//! deltas is still seen whole.

use super::analyzer::Analyzer;
use super::finding::{Finding, Location};
use super::policy::{Action, PolicyConfig};

/// New bytes collected before a scan.
const STEP: usize = 128;
/// Bytes of already-scanned text kept in front of new text (longer than any secret pattern's
/// usual match).
const OVERLAP: usize = 256;

/// Per-stream monitor.
#[derive(Debug, Default)]
pub struct StreamMonitor {
    window: String,
    /// Bytes at the front of `window` already scanned.
    scanned: usize,
    seen: usize,
    stopped: bool,
}

impl StreamMonitor {
    /// Feeds a response text delta; returns the blocking finding the first time one appears.
    pub fn feed(
        &mut self,
        delta: &str,
        analyzer: &Analyzer,
        policy: &PolicyConfig,
    ) -> Option<Finding> {
        if self.stopped || self.seen >= analyzer.max_bytes() {
            return None;
        }
        self.seen += delta.len();
        self.window.push_str(delta);
        if self.window.len() - self.scanned < STEP {
            return None;
        }
        self.scan(analyzer, policy)
    }

    /// End of stream: scans what is left.
    pub fn flush(&mut self, analyzer: &Analyzer, policy: &PolicyConfig) -> Option<Finding> {
        if self.stopped || self.window.len() == self.scanned {
            return None;
        }
        self.scan(analyzer, policy)
    }

    fn scan(&mut self, analyzer: &Analyzer, policy: &PolicyConfig) -> Option<Finding> {
        let scan = analyzer.scan_text(&self.window, Location::Response);
        let hit = scan
            .findings
            .into_iter()
            .find(|f| policy.action_for(f) == Action::Block);
        let keep = self
            .window
            .ceil_char_boundary(self.window.len().saturating_sub(OVERLAP));
        self.window.drain(..keep);
        self.scanned = self.window.len();
        self.stopped = hit.is_some();
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::policy::PolicyRule;

    #[test]
    fn stops_on_secret_split_across_deltas() {
        let a = Analyzer::new(1 << 20);
        let p = PolicyConfig {
            default_action: Action::Flag,
            rules: vec![PolicyRule {
                selector: crate::control::Selector::default(),
                kind: Some("secret".into()),
                min_severity: None,
                location: None,
                action: Action::Block,
            }],
        };
        let mut m = StreamMonitor::default();
        let text = format!(
            "{}here: AKIAIOSF{}",
            "filler ".repeat(30),
            "ODNN7EXAMPLE and more text"
        );
        let mut stop = None;
        for chunk in text.as_bytes().chunks(5) {
            let s = std::str::from_utf8(chunk).unwrap();
            if let Some(f) = m.feed(s, &a, &p) {
                stop = Some(f);
                break;
            }
        }
        let stop = stop.or_else(|| m.flush(&a, &p)).expect("stopped");
        assert_eq!(stop.kind, "secret.aws_access_key");
        assert!(m.feed("more", &a, &p).is_none());
        let mut quiet = StreamMonitor::default();
        assert!(quiet.feed(&"benign text ".repeat(40), &a, &p).is_none());
        assert!(quiet.flush(&a, &p).is_none());
    }
}
