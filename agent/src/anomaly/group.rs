//! The baselines of one group (one identity under one rule): per-exchange metrics are judged
//! as each exchange ends; per-bucket metrics are judged while their bucket fills (so a spike
//! is caught before the bucket closes) and folded into the baseline when it closes.

use super::{
    config::{AnomalyRule, Metric},
    ewma::{Ewma, alpha},
};

/// Most empty buckets folded in after a gap: beyond a few half-lives more zeros change
/// nothing the baseline would keep.
const MAX_GAP_BUCKETS: u64 = 1000;

/// An anomaly before it becomes a finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Deviation {
    /// Which metric.
    pub metric: Metric,
    /// Its value (per hour / per minute for bucketed metrics).
    pub value: f64,
    /// Baseline mean.
    pub mean: f64,
    /// Baseline deviation.
    pub sd: f64,
    /// Deviations above the mean.
    pub z: f64,
    /// Samples behind the baseline.
    pub samples: u64,
}

/// One exchange as the baselines see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// End of the exchange, seconds since the epoch.
    pub at_secs: u64,
    /// Input + output tokens, when known.
    pub tokens: Option<u64>,
    /// Cost, when known.
    pub cost_usd: Option<f64>,
    /// Whether it failed.
    pub error: bool,
    /// Duration in ms.
    pub latency_ms: f64,
}

/// Baselines and the open bucket of one group.
#[derive(Debug, Default)]
pub struct Group {
    baselines: [Ewma; 5],
    bucket: u64,
    count: u64,
    errors: u64,
    cost: f64,
    /// Bucketed metrics already reported for the open bucket.
    fired: [bool; 5],
    /// Last sample time, for evicting idle groups.
    pub last_secs: u64,
}

fn slot(m: Metric) -> usize {
    Metric::ALL.iter().position(|x| *x == m).expect("listed")
}

impl Group {
    /// Adds `s`, returning the metrics that deviate.
    pub fn observe(&mut self, rule: &AnomalyRule, s: &Sample) -> Vec<Deviation> {
        let a = alpha(rule.half_life);
        let mut out = Vec::new();
        let bucket = s.at_secs / rule.bucket_secs;
        if self.last_secs == 0 {
            self.bucket = bucket;
        } else if bucket > self.bucket {
            out.extend(self.close(rule, bucket, a));
        }
        self.last_secs = self.last_secs.max(s.at_secs);
        // Per-exchange metrics: judged against the baseline before the value joins it.
        #[allow(clippy::cast_precision_loss)] // token counts stay far below 2^52
        let per_exchange = [
            (Metric::TokensPerRequest, s.tokens.map(|t| t as f64)),
            (Metric::Latency, Some(s.latency_ms)),
        ];
        for (m, v) in per_exchange {
            let Some(v) = v.filter(|_| rule.metrics.contains(&m)) else {
                continue;
            };
            let b = &mut self.baselines[slot(m)];
            if let Some(d) = judge(rule, m, b, v, 1) {
                out.push(d);
            }
            b.update(v, a);
        }
        self.count += 1;
        self.errors += u64::from(s.error);
        self.cost += s.cost_usd.unwrap_or(0.0);
        // Judged while the bucket fills, so a burst is caught as it happens. (The error rate
        // waits for the bucket to close: judged over a partial bucket, the binomial noise of
        // small counts would alert on steady traffic.)
        for m in [Metric::RequestsPerMinute, Metric::CostPerHour] {
            if !rule.metrics.contains(&m) || self.fired[slot(m)] {
                continue;
            }
            let Some(v) = self.bucket_value(rule, m) else {
                continue;
            };
            if let Some(d) = judge(rule, m, &self.baselines[slot(m)], v, self.count) {
                self.fired[slot(m)] = true;
                out.push(d);
            }
        }
        out
    }

    /// The open bucket's value of a bucketed metric, in its reported unit.
    #[allow(clippy::cast_precision_loss)] // counts and seconds stay far below 2^52
    fn bucket_value(&self, rule: &AnomalyRule, m: Metric) -> Option<f64> {
        let secs = rule.bucket_secs as f64;
        match m {
            Metric::RequestsPerMinute => Some(self.count as f64 * 60.0 / secs),
            Metric::CostPerHour => Some(self.cost * 3600.0 / secs),
            Metric::ErrorRate => (self.count >= rule.min_bucket_requests)
                .then(|| self.errors as f64 / self.count as f64),
            Metric::TokensPerRequest | Metric::Latency => None,
        }
    }

    /// Judges the closing bucket's error rate, then folds the bucket, and the empty ones up to
    /// `next`, into the baselines.
    fn close(&mut self, rule: &AnomalyRule, next: u64, a: f64) -> Option<Deviation> {
        let deviation = self
            .bucket_value(rule, Metric::ErrorRate)
            .filter(|_| rule.metrics.contains(&Metric::ErrorRate))
            .and_then(|v| {
                let b = &self.baselines[slot(Metric::ErrorRate)];
                judge(rule, Metric::ErrorRate, b, v, self.count)
            });
        for m in [
            Metric::RequestsPerMinute,
            Metric::CostPerHour,
            Metric::ErrorRate,
        ] {
            if let Some(v) = self.bucket_value(rule, m) {
                self.baselines[slot(m)].update(v, a);
            }
        }
        // Empty buckets: no requests and no cost (their error rate is undefined).
        let gap = (next - self.bucket - 1).min(MAX_GAP_BUCKETS);
        for _ in 0..gap {
            self.baselines[slot(Metric::RequestsPerMinute)].update(0.0, a);
            self.baselines[slot(Metric::CostPerHour)].update(0.0, a);
        }
        self.bucket = next;
        self.count = 0;
        self.errors = 0;
        self.cost = 0.0;
        self.fired = [false; 5];
        deviation
    }
}

/// A deviation when `v` lies more than `z_score` deviations above a mature baseline.
fn judge(rule: &AnomalyRule, m: Metric, b: &Ewma, value: f64, count: u64) -> Option<Deviation> {
    if b.n < rule.min_samples {
        return None;
    }
    // Floors on the deviation, so steady traffic with (nearly) no variance does not alert on
    // noise: a tenth of the mean for amounts, Poisson's √mean for counts, and binomial noise
    // (at least 5 percentage points) for the error rate.
    let floor = match m {
        Metric::RequestsPerMinute => b.mean.abs().sqrt().max(0.1 * b.mean.abs()),
        Metric::ErrorRate => {
            // Binomial noise of a bucket of `count` exchanges at the baseline rate.
            #[allow(clippy::cast_precision_loss)]
            let size = count.max(1) as f64;
            let rate = b.mean.clamp(0.05, 0.95);
            (rate * (1.0 - rate) / size).sqrt().max(0.05)
        }
        Metric::CostPerHour | Metric::TokensPerRequest | Metric::Latency => 0.1 * b.mean.abs(),
    };
    let z = b.z(value, floor);
    (z > rule.z_score).then(|| Deviation {
        metric: m,
        value,
        mean: b.mean,
        sd: b.sd(),
        z,
        samples: b.n,
    })
}
