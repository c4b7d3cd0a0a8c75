//! Findings and masking. A finding never holds the matched text itself, only a masked excerpt.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// Where the text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Request,
    Response,
    ToolCall,
    /// The traffic of a caller rather than one text: anomaly findings (what a policy rule with
    /// `location = "exchange"` matches).
    Exchange,
}

/// The transformed view of a text a finding was made in, when the text as written did not
/// show it: the evasion was undone first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// Unicode NFKC, confusables folded, zero-width and bidi controls removed.
    Normalized,
    /// A base64 (standard or URL-safe) segment, decoded.
    Base64,
    /// A hex segment, decoded.
    Hex,
    /// URL percent-escapes decoded.
    Url,
    /// ROT13 undone.
    Rot13,
}

impl View {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normalized => "normalized",
            Self::Base64 => "base64",
            Self::Hex => "hex",
            Self::Url => "url",
            Self::Rot13 => "rot13",
        }
    }
}

/// One detection.
#[derive(Clone, PartialEq, Serialize)]
pub struct Finding {
    /// `category.name`, e.g. `secret.aws_access_key`, `pii.payment_card`.
    pub kind: &'static str,
    pub severity: Severity,
    /// 0.0–1.0.
    pub confidence: f32,
    pub location: Location,
    /// Masked excerpt; never the raw secret.
    pub excerpt: String,
    /// Byte span in the analysed text (for redaction; not serialised). For a finding made in
    /// a view, the span of the text as written that the view was made from (the whole encoded
    /// segment, or the characters the normalised match came from).
    #[serde(skip)]
    pub span: Range<usize>,
    /// Set when the finding was made only in a transformed view of the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<View>,
}

// By hand so a finding made in the text as written prints exactly as it always has: the
// analysis benchmark digests this output to show that findings did not change.
impl std::fmt::Debug for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Finding");
        d.field("kind", &self.kind)
            .field("severity", &self.severity)
            .field("confidence", &self.confidence)
            .field("location", &self.location)
            .field("excerpt", &self.excerpt)
            .field("span", &self.span);
        if let Some(v) = self.view {
            d.field("view", &v);
        }
        d.finish()
    }
}

impl Finding {
    /// The category (`secret`, `pii`, `injection`, `tool`).
    pub fn category(&self) -> &'static str {
        self.kind.split_once('.').map_or(self.kind, |(c, _)| c)
    }
}

/// Masks a secret: at most 4 leading characters (never more than a quarter of it), then the
/// length. `AKIAIOSFODNN7EXAMPLE` → `AKIA****(20)`.
pub fn mask_secret(s: &str) -> String {
    let n = s.chars().count();
    let keep = if n >= 16 { 4 } else { n / 4 };
    let head: String = s.chars().take(keep).collect();
    format!("{head}****({n})")
}

/// Masks all but the last `tail` alphanumeric characters, keeping separators (card, IBAN, phone).
pub fn mask_tail(s: &str, tail: usize) -> String {
    let total = s.chars().filter(char::is_ascii_alphanumeric).count();
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                seen += 1;
                if seen + tail > total { c } else { '*' }
            } else {
                c
            }
        })
        .collect()
}

/// Masks an email's local part: `jane.doe@example.com` → `j***@example.com`.
pub fn mask_email(s: &str) -> String {
    match s.split_once('@') {
        Some((local, domain)) => format!("{}***@{domain}", local.chars().next().unwrap_or('*')),
        None => mask_secret(s),
    }
}

/// Removes findings overlapping an earlier one (detectors list specific patterns first).
pub(crate) fn drop_overlaps(findings: &mut Vec<Finding>, from: usize) {
    let mut kept: Vec<Finding> = Vec::with_capacity(findings.len() - from);
    for f in findings.drain(from..) {
        if !kept
            .iter()
            .any(|k| k.span.start < f.span.end && f.span.start < k.span.end)
        {
            kept.push(f);
        }
    }
    findings.extend(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask_secret("AKIAIOSFODNN7EXAMPLE"), "AKIA****(20)");
        assert_eq!(mask_secret("hunter2"), "h****(7)");
        assert_eq!(mask_tail("4111 1111 1111 1111", 4), "**** **** **** 1111");
        assert_eq!(mask_email("jane.doe@example.com"), "j***@example.com");
    }

    #[test]
    fn severity_orders() {
        assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Info);
    }
}
