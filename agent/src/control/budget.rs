//! One group's spend in its current budget window, and which thresholds it has crossed.

use serde::{Deserialize, Serialize};

use super::{events::Level, window::Bounds};

/// Spend of one group of one limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    /// Start of the window the spend belongs to (seconds since the epoch).
    pub window_start: i64,
    pub spent_usd: f64,
    /// Levels already reported in this window (bit per [`Level`]).
    pub crossed: u8,
}

fn bit(l: Level) -> u8 {
    match l {
        Level::Soft => 1,
        Level::Hard80 => 2,
        Level::Hard => 4,
    }
}

impl Spend {
    /// Starts over when `b` is a later window than the spend's.
    pub fn roll(&mut self, b: Bounds) {
        if self.window_start != b.start {
            *self = Self {
                window_start: b.start,
                ..Self::default()
            };
        }
    }

    /// Whether the hard limit is reached.
    pub fn exhausted(&self, hard_usd: Option<f64>) -> bool {
        hard_usd.is_some_and(|h| self.spent_usd >= h)
    }

    /// Adds `usd`; returns the levels crossed now for the first time in this window, with
    /// their thresholds.
    pub fn add(&mut self, usd: f64, soft: Option<f64>, hard: Option<f64>) -> Vec<(Level, f64)> {
        if usd.is_finite() && usd > 0.0 {
            self.spent_usd += usd;
        }
        let thresholds = [
            (Level::Soft, soft),
            (Level::Hard80, hard.map(|h| h * 0.8)),
            (Level::Hard, hard),
        ];
        let mut crossed = Vec::new();
        for (level, t) in thresholds {
            if let Some(t) = t
                && self.spent_usd >= t
                && self.crossed & bit(level) == 0
            {
                self.crossed |= bit(level);
                crossed.push((level, t));
            }
        }
        crossed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossings_fire_once_per_window() {
        let w1 = Bounds { start: 0, end: 10 };
        let w2 = Bounds { start: 10, end: 20 };
        let mut s = Spend::default();
        s.roll(w1);
        assert!(s.add(0.4, Some(0.5), Some(1.0)).is_empty());
        assert_eq!(s.add(0.2, Some(0.5), Some(1.0)), vec![(Level::Soft, 0.5)]);
        assert!(s.add(0.1, Some(0.5), Some(1.0)).is_empty());
        assert_eq!(s.add(0.1, Some(0.5), Some(1.0)), vec![(Level::Hard80, 0.8)]);
        assert!(!s.exhausted(Some(1.0)));
        assert_eq!(s.add(0.3, Some(0.5), Some(1.0)), vec![(Level::Hard, 1.0)]);
        assert!(s.exhausted(Some(1.0)));
        assert!(!s.exhausted(None));
        s.roll(w1);
        assert!(s.exhausted(Some(1.0)), "same window: kept");
        s.roll(w2);
        assert_eq!((s.spent_usd, s.crossed), (0.0, 0));
        // One large exchange crosses every level at once; NaN never counts.
        assert_eq!(s.add(f64::NAN, None, Some(1.0)), vec![]);
        assert_eq!(s.add(5.0, Some(0.5), Some(1.0)).len(), 3);
    }
}
