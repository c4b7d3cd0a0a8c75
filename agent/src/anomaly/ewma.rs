//! An exponentially weighted mean and variance (West's incremental form), the baseline each
//! metric of each group is compared with.

/// Baseline of one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    /// Samples seen.
    pub n: u64,
    /// Weighted mean.
    pub mean: f64,
    /// Weighted variance.
    pub var: f64,
}

impl Ewma {
    /// Adds `x` with weight `alpha`; the first samples weigh `1/n` at least, so the baseline
    /// starts as a plain mean instead of leaning on the first value.
    pub fn update(&mut self, x: f64, alpha: f64) {
        self.n += 1;
        #[allow(clippy::cast_precision_loss)] // sample counts stay far below 2^52
        let a = alpha.max(1.0 / self.n as f64);
        let diff = x - self.mean;
        let incr = a * diff;
        self.mean += incr;
        self.var = (1.0 - a) * (self.var + diff * incr);
    }

    /// How many deviations `x` lies above the mean; the deviation is at least `floor`, so
    /// perfectly steady traffic (variance 0) does not turn any wiggle into an anomaly.
    pub fn z(&self, x: f64, floor: f64) -> f64 {
        let sd = self.var.max(0.0).sqrt().max(floor).max(f64::EPSILON);
        (x - self.mean) / sd
    }

    /// The deviation as reported.
    pub fn sd(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// The EWMA weight whose influence halves after `half_life` samples.
pub fn alpha(half_life: u32) -> f64 {
    1.0 - 0.5f64.powf(1.0 / f64::from(half_life.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_mean_and_variance() {
        let mut e = Ewma::default();
        for i in 0..1000 {
            e.update(if i % 2 == 0 { 9.0 } else { 11.0 }, alpha(50));
        }
        assert!((e.mean - 10.0).abs() < 0.1, "{e:?}");
        assert!((e.sd() - 1.0).abs() < 0.1, "{e:?}");
        assert!(e.z(20.0, 0.0) > 9.0);
        assert!(e.z(10.5, 0.0) < 1.0);
        // The floor bounds z when the baseline has no variance.
        let mut flat = Ewma::default();
        for _ in 0..10 {
            flat.update(5.0, alpha(50));
        }
        assert!((flat.z(6.0, 0.5) - 2.0).abs() < 1e-9);
        assert!((alpha(1) - 0.5).abs() < 1e-12);
    }
}
