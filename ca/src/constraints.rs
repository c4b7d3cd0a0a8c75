//! Which server names the root may vouch for: the X.509 Name Constraints of the root.
//!
//! Each intercepted host pattern becomes a permitted DNS subtree: `api.openai.com` permits that
//! name (and, by RFC 5280 subtree semantics, names below it); `*.openai.azure.com` permits
//! `openai.azure.com` and everything below. All IP addresses are excluded, since RFC 5280 leaves
//! name types without a constraint unconstrained and a stolen key could otherwise mint IP
//! certificates.

use std::net::IpAddr;

use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};
use x509_parser::extensions::GeneralName;

use crate::CaError;

/// The set of DNS subtrees the root is limited to, or no limit at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConstraints {
    /// `None`: unconstrained root. `Some`: permitted DNS subtrees, lowercase, no redundancy.
    subtrees: Option<Vec<String>>,
}

impl HostConstraints {
    /// A root without name constraints (operator opted out).
    pub fn unconstrained() -> Self {
        Self { subtrees: None }
    }

    /// Builds the permitted subtrees from host patterns (`name` or `*.name`).
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Self, CaError> {
        let mut bases = patterns
            .iter()
            .map(|p| pattern_base(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if bases.is_empty() {
            return Err(CaError::NoHosts);
        }
        // Shortest first, so a broader subtree is kept and the narrower ones it covers dropped.
        bases.sort_by_key(|b| (b.matches('.').count(), b.clone()));
        let mut subtrees: Vec<String> = Vec::new();
        for base in bases {
            if !subtrees.iter().any(|s| within(&base, s)) {
                subtrees.push(base);
            }
        }
        Ok(Self {
            subtrees: Some(subtrees),
        })
    }

    /// Whether the root's constraints permit a certificate for `host`.
    pub fn covers(&self, host: &str) -> bool {
        let Some(subtrees) = &self.subtrees else {
            return true;
        };
        let host = normalize(host);
        host.parse::<IpAddr>().is_err() && subtrees.iter().any(|s| within(&host, s))
    }

    /// Whether every name a host pattern (`name` or `*.name`) can match is permitted.
    pub fn covers_pattern(&self, pattern: &str) -> bool {
        let pattern = normalize(pattern);
        self.covers(pattern.strip_prefix("*.").unwrap_or(&pattern))
    }

    /// The permitted DNS subtrees, `None` when unconstrained.
    pub fn subtrees(&self) -> Option<&[String]> {
        self.subtrees.as_deref()
    }

    /// The Name Constraints extension for the root, `None` when unconstrained.
    pub(crate) fn to_extension(&self) -> Option<NameConstraints> {
        let subtrees = self.subtrees.as_ref()?;
        Some(NameConstraints {
            permitted_subtrees: subtrees
                .iter()
                .map(|s| GeneralSubtree::DnsName(s.clone()))
                .collect(),
            excluded_subtrees: vec![
                GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([0; 4], 0)),
                GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix([0; 16], 0)),
            ],
        })
    }

    /// Reads the constraints back from a parsed root certificate.
    pub(crate) fn from_cert(cert: &x509_parser::certificate::X509Certificate<'_>) -> Self {
        let Ok(Some(ext)) = cert.name_constraints() else {
            return Self::unconstrained();
        };
        let subtrees = ext
            .value
            .permitted_subtrees
            .iter()
            .flatten()
            .filter_map(|s| match s.base {
                GeneralName::DNSName(name) => Some(normalize(name)),
                _ => None,
            })
            .collect();
        Self {
            subtrees: Some(subtrees),
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `name` equals `subtree` or lies below it (label-aligned, so `evilopenai.com` is outside).
fn within(name: &str, subtree: &str) -> bool {
    name == subtree
        || name
            .strip_suffix(subtree)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// The subtree base of one host pattern, validated.
fn pattern_base(pattern: &str) -> Result<String, CaError> {
    let invalid = |reason| CaError::InvalidHostPattern {
        pattern: pattern.to_string(),
        reason,
    };
    let name = normalize(pattern);
    let base = name.strip_prefix("*.").unwrap_or(&name);
    if base.parse::<IpAddr>().is_ok() {
        return Err(invalid(
            "IP addresses cannot be intercepted by server name; use a DNS name",
        ));
    }
    if base.contains('*') {
        return Err(invalid("only a leading `*.` wildcard is supported"));
    }
    if base.len() > 253 || base.split('.').any(|l| !valid_label(l)) {
        return Err(invalid("not a valid DNS name"));
    }
    if !base.contains('.') {
        // A single-label subtree (`com`) would let the root vouch for a whole TLD.
        return Err(invalid("needs at least two labels"));
    }
    Ok(base.to_string())
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(patterns: &[&str]) -> HostConstraints {
        HostConstraints::from_patterns(patterns).unwrap()
    }

    #[test]
    fn wildcards_become_their_base_and_redundant_subtrees_are_dropped() {
        let c = build(&[
            "api.openai.com",
            "*.openai.azure.com",
            "openai.com",
            "API.Anthropic.com.",
        ]);
        assert_eq!(
            c.subtrees().unwrap(),
            ["openai.com", "api.anthropic.com", "openai.azure.com"]
        );
    }

    #[test]
    fn covers_is_label_aligned_and_case_insensitive() {
        let c = build(&["api.openai.com", "*.openai.azure.com"]);
        assert!(c.covers("api.openai.com"));
        assert!(c.covers("API.OPENAI.COM."));
        assert!(c.covers("x.openai.azure.com"));
        assert!(c.covers("openai.azure.com"));
        assert!(!c.covers("evilapi.openai.com"));
        assert!(!c.covers("openai.com"));
        assert!(!c.covers("example.org"));
        assert!(!c.covers("127.0.0.1"));
        assert!(c.covers_pattern("*.openai.azure.com"));
        assert!(!c.covers_pattern("*.openai.com"));
        assert!(HostConstraints::unconstrained().covers("anything.example"));
    }

    #[test]
    fn bad_patterns_are_rejected_with_a_reason() {
        for bad in [
            "*.com",
            "127.0.0.1",
            "api.*.com",
            "",
            "a..b",
            "-a.com",
            "com",
        ] {
            let err = HostConstraints::from_patterns(&[bad]).unwrap_err();
            assert!(
                matches!(err, CaError::InvalidHostPattern { .. }),
                "{bad}: {err}"
            );
        }
        let none: [&str; 0] = [];
        assert!(matches!(
            HostConstraints::from_patterns(&none),
            Err(CaError::NoHosts)
        ));
    }
}
