//! Token buckets for request and token rates. Time is passed in (seconds on a monotonic clock)
//! so the arithmetic is testable without sleeping.

/// A bucket of `capacity` refilled at `rate` per second. The level may go negative: token
/// rates are charged after the fact (a response's size is known only at its end), and the debt
/// is paid back by refill before the next request is admitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    rate: f64,
    capacity: f64,
    level: f64,
    at: f64,
}

impl Bucket {
    /// A full bucket at time `now`.
    pub fn new(rate: f64, capacity: f64, now: f64) -> Self {
        Self {
            rate,
            capacity,
            level: capacity,
            at: now,
        }
    }

    /// Changes rate and size (a reload) keeping the level, clamped to the new size.
    pub fn reconfigure(&mut self, rate: f64, capacity: f64, now: f64) {
        self.refill(now);
        self.rate = rate;
        self.capacity = capacity;
        self.level = self.level.min(capacity);
    }

    fn refill(&mut self, now: f64) {
        let dt = (now - self.at).max(0.0);
        self.level = (self.level + dt * self.rate).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// Takes `n` when available; otherwise returns the seconds until it will be.
    pub fn take(&mut self, n: f64, now: f64) -> Result<(), f64> {
        self.refill(now);
        if self.level >= n {
            self.level -= n;
            Ok(())
        } else {
            Err((n - self.level) / self.rate)
        }
    }

    /// Whether the level is above zero; otherwise the seconds until it will be.
    pub fn check_positive(&mut self, now: f64) -> Result<(), f64> {
        self.refill(now);
        if self.level > 0.0 {
            Ok(())
        } else {
            Err((-self.level) / self.rate + 1.0 / self.rate.max(1e-9))
        }
    }

    /// Charges `n` after the fact (may go into debt).
    pub fn charge(&mut self, n: f64, now: f64) {
        self.refill(now);
        self.level -= n;
    }

    /// The current level.
    pub fn level(&mut self, now: f64) -> f64 {
        self.refill(now);
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_the_burst_then_the_rate() {
        let mut b = Bucket::new(5.0, 2.0, 0.0);
        assert!(b.take(1.0, 0.0).is_ok());
        assert!(b.take(1.0, 0.0).is_ok());
        let wait = b.take(1.0, 0.0).unwrap_err();
        assert!((wait - 0.2).abs() < 1e-9);
        assert!(b.take(1.0, 0.2).is_ok());
        // Over ten seconds at 5/s, starting full with 2: 52 admitted when asked constantly.
        let mut b = Bucket::new(5.0, 2.0, 0.0);
        let admitted = (0..10_000)
            .filter(|i| b.take(1.0, f64::from(*i) * 0.001).is_ok())
            .count();
        assert!((51..=52).contains(&admitted), "{admitted}");
    }

    #[test]
    fn debt_delays_the_next_request() {
        let mut b = Bucket::new(100.0, 1000.0, 0.0);
        assert!(b.check_positive(0.0).is_ok());
        b.charge(1500.0, 0.0);
        assert!((b.level(0.0) + 500.0).abs() < 1e-9);
        let wait = b.check_positive(1.0).unwrap_err();
        assert!((wait - 4.01).abs() < 1e-9, "{wait}");
        assert!(b.check_positive(5.1).is_ok());
    }

    #[test]
    fn reconfigure_keeps_level_within_the_new_size() {
        let mut b = Bucket::new(1.0, 10.0, 0.0);
        b.take(2.0, 0.0).unwrap();
        b.reconfigure(1.0, 5.0, 0.0);
        assert!((b.level(0.0) - 5.0).abs() < 1e-9);
        b.reconfigure(1.0, 50.0, 0.0);
        assert!((b.level(0.0) - 5.0).abs() < 1e-9);
    }
}
