//! Exponential backoff between delivery attempts.

use std::time::Duration;

/// Delay before retry `n` (0-based): `initial · 2ⁿ`, at most `max`.
pub fn delay(n: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let got: Vec<_> = (0..8).map(|n| delay(n, ms(500), ms(10_000))).collect();
        assert_eq!(
            got,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(10_000),
                ms(10_000),
                ms(10_000)
            ]
        );
        assert_eq!(delay(200, ms(1), ms(30_000)), ms(30_000));
        assert_eq!(delay(40, Duration::from_secs(u64::MAX / 2), ms(7)), ms(7));
    }
}
