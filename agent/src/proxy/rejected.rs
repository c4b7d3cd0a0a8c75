//! Memory of apps that rejected the llmtrace certificate, so their later connections to the
//! same name are relayed untouched instead of failing again.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Bounded, expiring set of (executable, server name) pairs.
#[derive(Debug)]
pub struct RejectedCerts {
    entries: Mutex<HashMap<(String, String), Instant>>,
    capacity: usize,
    ttl: Duration,
}

impl RejectedCerts {
    /// Remembers at most `capacity` pairs, each for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
            ttl,
        }
    }

    /// Remembers that `exe` rejected the certificate for `sni` at `now`.
    pub fn remember(&self, exe: &str, sni: &str, now: Instant) {
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
        entries.insert((exe.to_owned(), sni.to_owned()), now);
    }

    /// Whether `exe` rejected the certificate for `sni` within the last `ttl`.
    pub fn contains(&self, exe: &str, sni: &str, now: Instant) -> bool {
        let mut entries = self.entries.lock().expect("rejected-cert memory poisoned");
        let key = (exe.to_owned(), sni.to_owned());
        match entries.get(&key) {
            Some(at) if now.saturating_duration_since(*at) < self.ttl => true,
            Some(_) => {
                entries.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Number of remembered pairs (expired ones included until touched).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_executable_and_name_and_expires() {
        let m = RejectedCerts::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        m.remember("/usr/bin/curl", "api.openai.com", t0);
        assert!(m.contains("/usr/bin/curl", "api.openai.com", t0));
        assert!(!m.contains("/usr/bin/python3", "api.openai.com", t0));
        assert!(!m.contains("/usr/bin/curl", "api.anthropic.com", t0));
        assert!(!m.contains(
            "/usr/bin/curl",
            "api.openai.com",
            t0 + Duration::from_secs(11)
        ));
    }

    #[test]
    fn stays_bounded() {
        let m = RejectedCerts::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            m.remember("/bin/x", name, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(m.len(), 2);
        assert!(!m.contains("/bin/x", "a", t0));
        assert!(m.contains("/bin/x", "c", t0));
    }
}
