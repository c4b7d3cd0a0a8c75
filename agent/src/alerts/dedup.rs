//! One alert per key per window: later events in the window are counted, and the count rides
//! on the next alert for the key. Memory is bounded: at most `max_keys` keys per rule.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// Most keys a rule remembers; beyond it expired keys go first, then the oldest.
pub const MAX_KEYS: usize = 10_000;

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Alert, carrying how many events of the key were suppressed since the last alert.
    Send {
        /// Suppressed events since the previous alert of the key.
        suppressed: u64,
    },
    /// Within the window of the key's last alert: counted only.
    Suppress,
}

#[derive(Debug)]
struct Slot {
    sent_at: Instant,
    suppressed: u64,
}

/// Per-key windows of one rule.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    max_keys: usize,
    keys: HashMap<String, Slot>,
}

impl Dedup {
    /// Windows of `window`, at most `max_keys` keys.
    pub fn new(window: Duration, max_keys: usize) -> Self {
        Self {
            window,
            max_keys: max_keys.max(1),
            keys: HashMap::new(),
        }
    }

    /// Decides for an event of `key` at `now`.
    pub fn check(&mut self, key: &str, now: Instant) -> Decision {
        if let Some(slot) = self.keys.get_mut(key) {
            if now.saturating_duration_since(slot.sent_at) < self.window {
                slot.suppressed += 1;
                return Decision::Suppress;
            }
            let suppressed = std::mem::take(&mut slot.suppressed);
            slot.sent_at = now;
            return Decision::Send { suppressed };
        }
        self.make_room(now);
        self.keys.insert(
            key.to_owned(),
            Slot {
                sent_at: now,
                suppressed: 0,
            },
        );
        Decision::Send { suppressed: 0 }
    }

    /// Takes `old`'s keys (its window is not kept: this one's applies).
    pub fn adopt(&mut self, old: &mut Self) {
        self.keys = std::mem::take(&mut old.keys);
        while self.keys.len() > self.max_keys {
            let Some(oldest) = self
                .keys
                .iter()
                .min_by_key(|(_, s)| s.sent_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.keys.remove(&oldest);
        }
    }

    /// Keys remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn make_room(&mut self, now: Instant) {
        if self.keys.len() < self.max_keys {
            return;
        }
        // Keys whose window has passed and that suppressed nothing carry no information.
        let window = self.window;
        self.keys
            .retain(|_, s| now.saturating_duration_since(s.sent_at) < window || s.suppressed > 0);
        if self.keys.len() >= self.max_keys
            && let Some(oldest) = self
                .keys
                .iter()
                .min_by_key(|(_, s)| s.sent_at)
                .map(|(k, _)| k.clone())
        {
            self.keys.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alert_per_window_with_the_suppressed_count_on_the_next() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_mins(1), 100);
        assert_eq!(d.check("k", t0), Decision::Send { suppressed: 0 });
        assert_eq!(
            d.check("k", t0 + Duration::from_secs(1)),
            Decision::Suppress
        );
        assert_eq!(
            d.check("k", t0 + Duration::from_secs(59)),
            Decision::Suppress
        );
        // Another key has its own window.
        assert_eq!(
            d.check("other", t0 + Duration::from_secs(2)),
            Decision::Send { suppressed: 0 }
        );
        assert_eq!(
            d.check("k", t0 + Duration::from_mins(1)),
            Decision::Send { suppressed: 2 }
        );
        assert_eq!(
            d.check("k", t0 + Duration::from_secs(61)),
            Decision::Suppress
        );
        assert_eq!(
            d.check("k", t0 + Duration::from_secs(200)),
            Decision::Send { suppressed: 1 }
        );
        assert_eq!(
            d.check("k", t0 + Duration::from_mins(5)),
            Decision::Send { suppressed: 0 }
        );
    }

    #[test]
    fn adopted_keys_keep_their_window_and_count() {
        let t0 = Instant::now();
        let mut old = Dedup::new(Duration::from_mins(1), 100);
        old.check("k", t0);
        old.check("k", t0 + Duration::from_secs(1));
        let mut new = Dedup::new(Duration::from_secs(30), 100);
        new.adopt(&mut old);
        assert_eq!(
            new.check("k", t0 + Duration::from_secs(10)),
            Decision::Suppress
        );
        // The new window applies; the count carried over.
        assert_eq!(
            new.check("k", t0 + Duration::from_secs(31)),
            Decision::Send { suppressed: 2 }
        );
    }

    #[test]
    fn keys_are_bounded() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(10), 3);
        for i in 0..10 {
            d.check(&format!("k{i}"), t0 + Duration::from_millis(i));
        }
        assert!(d.len() <= 3);
        // The newest key is still remembered.
        assert_eq!(
            d.check("k9", t0 + Duration::from_secs(1)),
            Decision::Suppress
        );
    }
}
