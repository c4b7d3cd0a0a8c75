//! Figures of samples, shared by the benchmarks.

/// The median of `v`: its middle value once sorted, the upper one of the two middles for an
/// even count (a value that was measured); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::median;

    // Exact: the median is one of the samples, not a computed value.
    #[allow(clippy::float_cmp)]
    #[test]
    fn middle_value_upper_for_even_counts_nan_when_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(Vec::new()).is_nan());
    }
}
