//! Memory of apps that rejected the llmtrace certificate, so their later connections to the
//! same name are relayed untouched instead of failing again.
//!
//! Being remembered takes a connection out of inspection, so the memory is narrow: it is keyed
//! by (uid, executable, server name), so one user's app cannot opt another user's processes (or
//! other executables) out, and it learns only from an explicit certificate alert sent by the
//! app (see [`crate::tls::failure::HandshakeFailure::is_certificate_rejection`]), never from a
//! close or a timeout, which any process can produce at will.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::analysis::policy::{Action, PolicyConfig};

/// Who rejected the certificate for which name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RejectKey {
    /// The app's user id.
    pub uid: u32,
    /// The app's executable (or command name when the executable cannot be read).
    pub exe: String,
    /// The server name.
    pub sni: String,
}

impl RejectKey {
    /// A key from its parts.
    pub fn new(uid: u32, exe: &str, sni: &str) -> Self {
        Self {
            uid,
            exe: exe.to_owned(),
            sni: sni.to_owned(),
        }
    }
}

/// Bounded, expiring set of (uid, executable, server name) keys.
#[derive(Debug)]
pub struct RejectedCerts {
    entries: Mutex<HashMap<RejectKey, Instant>>,
    capacity: usize,
    ttl: Duration,
}

impl RejectedCerts {
    /// Remembers at most `capacity` keys, each for `ttl`; `capacity` 0 remembers nothing.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            ttl,
        }
    }

    /// Remembers that `key.exe` run by `key.uid` rejected the certificate for `key.sni` at `now`.
    pub fn remember(&self, key: RejectKey, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().expect("rejected-cert memory poisoned");
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, at| now.saturating_duration_since(*at) < ttl);
        }
        if entries.len() >= self.capacity {
            // Still full of live entries: forget the oldest.
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, now);
    }

    /// Whether `key` was remembered within the last `ttl`.
    pub fn contains(&self, key: &RejectKey, now: Instant) -> bool {
        let mut entries = self.entries.lock().expect("rejected-cert memory poisoned");
        match entries.get(key) {
            Some(at) if now.saturating_duration_since(*at) < self.ttl => true,
            Some(_) => {
                entries.remove(key);
                false
            }
            None => false,
        }
    }

    /// Number of remembered keys (expired ones included until touched).
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .expect("rejected-cert memory poisoned")
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `policy` enforces anything (some rule, or the default, blocks or redacts): then a
/// connection relayed because of learnt distrust escapes enforcement, and its record says so.
pub fn policy_enforces(policy: &PolicyConfig) -> bool {
    let enforcing = |a: Action| matches!(a, Action::Block | Action::Redact);
    enforcing(policy.default_action) || policy.rules.iter().any(|r| enforcing(r.action))
}

/// The error text of a relayed connection's record when the relay bypassed enforcement.
pub const UNENFORCED: &str = "policy not enforced: relayed untouched because this app \
    (same uid and executable) rejected the llmtrace certificate for this name before";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::policy::PolicyRule;

    #[test]
    fn remembers_per_uid_executable_and_name_and_expires() {
        let m = RejectedCerts::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        m.remember(RejectKey::new(1000, "/usr/bin/curl", "api.openai.com"), t0);
        assert!(m.contains(&RejectKey::new(1000, "/usr/bin/curl", "api.openai.com"), t0));
        // Another user running the same executable is still intercepted.
        assert!(!m.contains(&RejectKey::new(1001, "/usr/bin/curl", "api.openai.com"), t0));
        assert!(!m.contains(&RejectKey::new(0, "/usr/bin/curl", "api.openai.com"), t0));
        assert!(!m.contains(
            &RejectKey::new(1000, "/usr/bin/python3", "api.openai.com"),
            t0
        ));
        assert!(!m.contains(
            &RejectKey::new(1000, "/usr/bin/curl", "api.anthropic.com"),
            t0
        ));
        assert!(!m.contains(
            &RejectKey::new(1000, "/usr/bin/curl", "api.openai.com"),
            t0 + Duration::from_secs(11)
        ));
    }

    #[test]
    fn stays_bounded() {
        let m = RejectedCerts::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            m.remember(
                RejectKey::new(0, "/bin/x", name),
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(m.len(), 2);
        assert!(!m.contains(&RejectKey::new(0, "/bin/x", "a"), t0));
        assert!(m.contains(&RejectKey::new(0, "/bin/x", "c"), t0));
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let m = RejectedCerts::new(0, Duration::from_secs(10));
        let t0 = Instant::now();
        m.remember(RejectKey::new(0, "/bin/x", "a"), t0);
        assert!(m.is_empty());
        assert!(!m.contains(&RejectKey::new(0, "/bin/x", "a"), t0));
    }

    #[test]
    fn enforcement_is_any_block_or_redact() {
        let mut p = PolicyConfig::default();
        assert!(!policy_enforces(&p));
        p.default_action = Action::Redact;
        assert!(policy_enforces(&p));
        p.default_action = Action::Allow;
        p.rules.push(PolicyRule {
            selector: crate::control::Selector::default(),
            kind: Some("secret".into()),
            min_severity: None,
            location: None,
            action: Action::Block,
        });
        assert!(policy_enforces(&p));
        p.rules[0].action = Action::Flag;
        assert!(!policy_enforces(&p));
    }
}
