//! Which connections are intercepted: the ClientHello's server name against the configured
//! names; everything else is relayed untouched.

use std::collections::HashSet;

use hyper::{header, http::request::Parts, http::uri::Authority};
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// As [`Self::RejectedCertificate`], while the policy blocks or redacts: the relay
    /// escapes enforcement, and the record says so with this reason of its own.
    RejectedCertificateUnenforced,
    /// The app's uid has `[proxy] max_connections_per_uid` connections open already (relayed
    /// in fail-open mode, closed in fail-closed mode).
    UidConnectionCap,
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
            Self::RejectedCertificateUnenforced => "client_rejected_certificate_unenforced",
            Self::UidConnectionCap => "uid_connection_cap",
        }
    }

    /// This reason under a policy that does (`enforcing`) or does not block or redact.
    #[must_use]
    pub fn under_policy(self, enforcing: bool) -> Self {
        match self {
            Self::RejectedCertificate if enforcing => Self::RejectedCertificateUnenforced,
            other => other,
        }
    }
}

/// What happens to a provider connection that cannot be inspected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Uninspectable {
    /// Relay it untouched (recorded with the reason).
    #[default]
    Relay,
    /// Close it (recorded with the reason).
    Close,
}

impl SpliceReason {
    /// Whether the connection could not be inspected at all (as opposed to a name that is not
    /// intercepted, or an app that does not trust the llmtrace CA).
    pub fn is_uninspectable(self) -> bool {
        matches!(
            self,
            Self::NotHello(_) | Self::NoSni | Self::UnsupportedAlpn
        )
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

/// Why a request's target (`:authority` or absolute URI, and every `Host` header) is not the
/// connection's TLS server name `sni` (lowercase) on `port`, the original destination's port;
/// `None` when it is. A port may be absent. Forwarding such a request would let an app reach a
/// host the policy never judged under a name it did (domain fronting).
pub fn misdirected(head: &Parts, sni: &str, port: u16) -> Option<String> {
    let check = |what: &str, value: &[u8]| -> Option<String> {
        let Some(authority) = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<Authority>().ok())
        else {
            return Some(format!("unreadable {what}"));
        };
        if authority.as_str().contains('@') {
            return Some(format!("{what} carries user information"));
        }
        let host = authority.host().trim_end_matches('.');
        if !host.eq_ignore_ascii_case(sni) {
            return Some(format!(
                "{what} names another host than the TLS server name"
            ));
        }
        match authority.port_u16() {
            Some(p) if p != port => Some(format!(
                "{what} names another port than the original destination"
            )),
            _ => None,
        }
    };
    if let Some(a) = head.uri.authority()
        && let Some(why) = check("the request target", a.as_str().as_bytes())
    {
        return Some(why);
    }
    head.headers
        .get_all(header::HOST)
        .iter()
        .find_map(|h| check("Host", h.as_bytes()))
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

    fn head(uri: &str, hosts: &[&str]) -> Parts {
        let mut b = hyper::Request::get(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_request_for_another_host_is_misdirected() {
        let sni = "api.openai.com";
        let ok = |uri: &str, hosts: &[&str]| misdirected(&head(uri, hosts), sni, 443).is_none();
        assert!(ok("/v1/models", &["api.openai.com"]));
        assert!(ok("/v1/models", &["API.OpenAI.com.:443"]));
        assert!(ok("/v1/models", &[]));
        assert!(ok("https://api.openai.com/v1/models", &[]));
        assert!(ok(
            "https://api.openai.com:443/v1/models",
            &["api.openai.com"]
        ));
        assert!(!ok("/v1/models", &["evil.example"]));
        assert!(!ok("/v1/models", &["api.openai.com:8443"]));
        assert!(!ok("/v1/models", &["api.openai.com", "evil.example"]));
        assert!(!ok("/v1/models", &["api.openai.com.evil.example"]));
        assert!(!ok("/v1/models", &["[::1]"]));
        assert!(!ok("/v1/models", &["api.openai.com@evil.example"]));
        assert!(!ok("/v1/models", &["evil.example@api.openai.com"]));
        assert!(!ok("https://evil.example/v1/models", &["api.openai.com"]));
        assert!(!ok(
            "https://api.openai.com:1/v1/models",
            &["api.openai.com"]
        ));
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
        assert_eq!(
            SpliceReason::RejectedCertificate.under_policy(true),
            SpliceReason::RejectedCertificateUnenforced
        );
        assert_eq!(
            SpliceReason::RejectedCertificate.under_policy(false),
            SpliceReason::RejectedCertificate
        );
        assert_eq!(SpliceReason::NoSni.under_policy(true), SpliceReason::NoSni);
        for uninspectable in [
            SpliceReason::NoSni,
            SpliceReason::UnsupportedAlpn,
            SpliceReason::NotHello(NotHello::Timeout),
            SpliceReason::NotHello(NotHello::TooLarge),
            SpliceReason::NotHello(NotHello::Malformed),
            SpliceReason::NotHello(NotHello::NotTls),
        ] {
            assert!(uninspectable.is_uninspectable());
        }
        assert!(!SpliceReason::NotIntercepted.is_uninspectable());
        assert!(!SpliceReason::RejectedCertificate.is_uninspectable());
        let d = decide(&Err(NotHello::NotTls), &names, |_| false);
        assert_eq!(
            d.clone(),
            Decision::Splice(SpliceReason::NotHello(NotHello::NotTls))
        );
    }
}
