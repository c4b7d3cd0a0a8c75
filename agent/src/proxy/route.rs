//! Which connections are intercepted: the ClientHello's server name against the configured
//! names; everything else is relayed untouched.

use std::collections::HashSet;

use crate::{
    tls::alpn,
    transport::sniff::{ClientHelloInfo, NotHello},
};

/// Server names to intercept: exact names and `*.domain` patterns (any depth below `domain`).
#[derive(Debug, Clone, Default)]
pub struct InterceptNames {
    exact: HashSet<String>,
    suffixes: Vec<String>,
}

impl InterceptNames {
    /// From host names and `*.` patterns (case-insensitive).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let mut names = Self::default();
        for p in patterns {
            let p = p.as_ref().trim_end_matches('.').to_ascii_lowercase();
            match p.strip_prefix("*.") {
                Some(domain) => names.suffixes.push(format!(".{domain}")),
                None => {
                    names.exact.insert(p);
                }
            }
        }
        names
    }

    /// Whether `sni` (lowercase) is to be intercepted.
    pub fn matches(&self, sni: &str) -> bool {
        self.exact.contains(sni)
            || self
                .suffixes
                .iter()
                .any(|s| sni.len() > s.len() && sni.ends_with(s.as_str()))
    }
}

/// Why a connection is relayed untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceReason {
    /// No usable ClientHello.
    NotHello(NotHello),
    /// A ClientHello without a server name.
    NoSni,
    /// A server name not configured for interception.
    NotIntercepted,
    /// The app offered ALPN protocols, none of them HTTP/1.1 or h2.
    UnsupportedAlpn,
    /// This app rejected the llmtrace certificate for this name before.
    RejectedCertificate,
}

impl SpliceReason {
    /// Short stable name, for metric labels and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotHello(n) => n.as_str(),
            Self::NoSni => "no_sni",
            Self::NotIntercepted => "not_intercepted_name",
            Self::UnsupportedAlpn => "unsupported_alpn",
            Self::RejectedCertificate => "client_rejected_certificate",
        }
    }
}

/// What to do with a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Terminate TLS for `sni`, offering `protocols` (ALPN).
    Mitm {
        /// Server name.
        sni: String,
        /// ALPN protocols to offer, in the app's order.
        protocols: Vec<Vec<u8>>,
    },
    /// Relay untouched.
    Splice(SpliceReason),
}

/// Decides from the sniffed ClientHello; `rejected` says whether this app is remembered as
/// not trusting the llmtrace CA for a name.
pub fn decide(
    hello: &Result<ClientHelloInfo, NotHello>,
    names: &InterceptNames,
    rejected: impl FnOnce(&str) -> bool,
) -> Decision {
    let info = match hello {
        Ok(info) => info,
        Err(why) => return Decision::Splice(SpliceReason::NotHello(*why)),
    };
    let Some(sni) = &info.sni else {
        return Decision::Splice(SpliceReason::NoSni);
    };
    if !names.matches(sni) {
        return Decision::Splice(SpliceReason::NotIntercepted);
    }
    let Some(protocols) = alpn::server_protocols(&info.alpn) else {
        return Decision::Splice(SpliceReason::UnsupportedAlpn);
    };
    if rejected(sni) {
        return Decision::Splice(SpliceReason::RejectedCertificate);
    }
    Decision::Mitm {
        sni: sni.clone(),
        protocols,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::unnecessary_wraps)] // the shape `decide` takes
    fn hello(sni: Option<&str>, alpn: &[&[u8]]) -> Result<ClientHelloInfo, NotHello> {
        Ok(ClientHelloInfo {
            sni: sni.map(str::to_owned),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        })
    }

    #[test]
    fn exact_and_wildcard_names_match_only_what_they_say() {
        let names = InterceptNames::new(&["API.openai.com", "*.openai.azure.com"]);
        assert!(names.matches("api.openai.com"));
        assert!(names.matches("eu.openai.azure.com"));
        assert!(names.matches("a.b.openai.azure.com"));
        assert!(!names.matches("openai.azure.com"));
        assert!(!names.matches("evilopenai.azure.com"));
        assert!(!names.matches("api.openai.com.evil.net"));
    }

    #[test]
    fn decisions() {
        let names = InterceptNames::new(&["api.openai.com"]);
        let d = decide(&hello(Some("api.openai.com"), &[b"h2"]), &names, |_| false);
        assert!(matches!(d, Decision::Mitm { .. }));
        let d = decide(&hello(Some("example.org"), &[]), &names, |_| false);
        assert_eq!(d, Decision::Splice(SpliceReason::NotIntercepted));
        let d = decide(&hello(None, &[]), &names, |_| false);
        assert_eq!(d, Decision::Splice(SpliceReason::NoSni));
        let d = decide(&hello(Some("api.openai.com"), &[b"imap"]), &names, |_| {
            false
        });
        assert_eq!(d, Decision::Splice(SpliceReason::UnsupportedAlpn));
        let d = decide(&hello(Some("api.openai.com"), &[]), &names, |_| true);
        assert_eq!(d, Decision::Splice(SpliceReason::RejectedCertificate));
        let d = decide(&Err(NotHello::NotTls), &names, |_| false);
        assert_eq!(
            d.clone(),
            Decision::Splice(SpliceReason::NotHello(NotHello::NotTls))
        );
    }
}
