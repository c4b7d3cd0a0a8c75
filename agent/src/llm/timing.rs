//! Streaming timing from caller-supplied instants (parsers never read the clock).

use std::time::{Duration, Instant};

use serde::Serialize;

/// Bound on remembered inter-chunk gaps; beyond it the median is over the first gaps only.
const MAX_GAPS: usize = 1 << 16;

/// Collects chunk arrival times.
#[derive(Debug, Clone)]
pub struct Timing {
    start: Instant,
    first_byte: Option<Instant>,
    first_token: Option<Instant>,
    last_chunk: Option<Instant>,
    gaps_us: Vec<u64>,
    max_gap_us: u64,
    chunks: u64,
}

/// Timing figures of one exchange, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimingSummary {
    /// Request start to the first response chunk carrying output (text or tool call).
    pub ttft_ms: Option<f64>,
    /// Request start to the first response body byte.
    pub first_byte_ms: Option<f64>,
    /// Median time between consecutive body chunks.
    pub inter_chunk_p50_ms: Option<f64>,
    /// Longest time between consecutive body chunks.
    pub inter_chunk_max_ms: Option<f64>,
    /// Number of body chunks seen.
    pub chunks: u64,
}

impl Timing {
    /// Starts timing at `start` (when the request was received).
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            first_byte: None,
            first_token: None,
            last_chunk: None,
            gaps_us: Vec::new(),
            max_gap_us: 0,
            chunks: 0,
        }
    }

    /// Records a body chunk arriving `at`; `has_output` when it carried generated output.
    pub fn chunk(&mut self, at: Instant, has_output: bool) {
        self.chunks += 1;
        self.first_byte.get_or_insert(at);
        if has_output {
            self.first_token.get_or_insert(at);
        }
        if let Some(prev) = self.last_chunk {
            let gap = micros(at.saturating_duration_since(prev));
            self.max_gap_us = self.max_gap_us.max(gap);
            if self.gaps_us.len() < MAX_GAPS {
                self.gaps_us.push(gap);
            }
        }
        self.last_chunk = Some(at);
    }

    /// Arrival of the last body chunk, if any.
    pub fn last_chunk(&self) -> Option<Instant> {
        self.last_chunk
    }

    /// Milliseconds from the start to `t`.
    pub fn since_start(&self, t: Instant) -> f64 {
        ms(t.saturating_duration_since(self.start))
    }

    /// Summarises the chunks seen.
    // Microsecond gaps stay far below 2^52, so the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    pub fn summary(&self) -> TimingSummary {
        let since = |t: Instant| ms(t.saturating_duration_since(self.start));
        let mut gaps = self.gaps_us.clone();
        gaps.sort_unstable();
        let p50 = (!gaps.is_empty()).then(|| gaps[(gaps.len() - 1) / 2] as f64 / 1000.0);
        TimingSummary {
            ttft_ms: self.first_token.map(since),
            first_byte_ms: self.first_byte.map(since),
            inter_chunk_p50_ms: p50,
            inter_chunk_max_ms: p50.map(|_| self.max_gap_us as f64 / 1000.0),
            chunks: self.chunks,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttft_gaps_and_duration() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = Timing::new(t0);
        t.chunk(at(100), false);
        t.chunk(at(150), true);
        t.chunk(at(160), true);
        t.chunk(at(400), true);
        let s = t.summary();
        assert_eq!(s.first_byte_ms, Some(100.0));
        assert_eq!(s.ttft_ms, Some(150.0));
        assert_eq!(s.inter_chunk_p50_ms, Some(50.0));
        assert_eq!(s.inter_chunk_max_ms, Some(240.0));
        assert_eq!(s.chunks, 4);
    }

    #[test]
    fn no_chunks() {
        let t0 = Instant::now();
        let s = Timing::new(t0).summary();
        assert_eq!((s.ttft_ms, s.inter_chunk_p50_ms), (None, None));
    }
}
