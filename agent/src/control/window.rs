//! Calendar-aligned budget windows: the hour, day or month containing an instant, in the
//! configured time zone (so a `day` budget resets at local midnight, DST included).

use jiff::{Timestamp, ToSpan as _, Zoned, tz::TimeZone};

use super::config::Window;

/// One window: `[start, end)` in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub start: i64,
    pub end: i64,
}

impl Bounds {
    /// Seconds from `now` to the window's end (at least 1: a `Retry-After` of 0 invites a spin).
    pub fn remaining_s(&self, now: i64) -> u64 {
        u64::try_from(self.end.saturating_sub(now))
            .unwrap_or(0)
            .max(1)
    }
}

/// The window of kind `w` containing `now` (seconds since the epoch) in `tz`.
pub fn bounds(w: Window, tz: &TimeZone, now: i64) -> Bounds {
    let ts = Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH);
    let zdt = ts.to_zoned(tz.clone());
    let (start, end) = match w {
        Window::Hour => {
            let start = truncate(&zdt, |z| {
                z.with().minute(0).second(0).subsec_nanosecond(0).build()
            });
            let end = start.checked_add(1.hour());
            (start, end)
        }
        Window::Day => {
            let start = truncate(&zdt, Zoned::start_of_day);
            let end = start.tomorrow().and_then(|t| t.start_of_day());
            (start, end)
        }
        Window::Month => {
            let start = truncate(&zdt, |z| z.first_of_month()?.start_of_day());
            let end = start.checked_add(1.month()).and_then(|t| t.start_of_day());
            (start, end)
        }
    };
    let start_s = start.timestamp().as_second();
    // Out of jiff's range only at the ends of time; a one-hour window is a safe fallback.
    let end_s = end.map_or(start_s + 3600, |e| e.timestamp().as_second());
    Bounds {
        start: start_s,
        end: end_s.max(start_s + 1),
    }
}

fn truncate(z: &Zoned, f: impl Fn(&Zoned) -> Result<Zoned, jiff::Error>) -> Zoned {
    f(z).unwrap_or_else(|_| z.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn utc_windows() {
        let tz = TimeZone::UTC;
        let now = at("2026-03-15T13:45:10Z");
        let h = bounds(Window::Hour, &tz, now);
        assert_eq!(
            (h.start, h.end),
            (at("2026-03-15T13:00:00Z"), at("2026-03-15T14:00:00Z"))
        );
        let d = bounds(Window::Day, &tz, now);
        assert_eq!(
            (d.start, d.end),
            (at("2026-03-15T00:00:00Z"), at("2026-03-16T00:00:00Z"))
        );
        let m = bounds(Window::Month, &tz, now);
        assert_eq!(
            (m.start, m.end),
            (at("2026-03-01T00:00:00Z"), at("2026-04-01T00:00:00Z"))
        );
        assert_eq!(h.remaining_s(now), 14 * 60 + 50);
        assert_eq!(h.remaining_s(h.end + 5), 1);
    }

    #[test]
    fn local_midnight_and_dst() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        // 23:30 UTC on 28 March is 00:30 CET on the 29th, the day clocks go forward.
        let d = bounds(Window::Day, &tz, at("2026-03-28T23:30:00Z"));
        assert_eq!(d.start, at("2026-03-28T23:00:00Z"));
        // That day has 23 hours: it ends at midnight CEST (22:00 UTC).
        assert_eq!(d.end, at("2026-03-29T22:00:00Z"));
        let m = bounds(Window::Month, &tz, at("2026-02-28T23:30:00Z"));
        assert_eq!(
            (m.start, m.end),
            (at("2026-02-28T23:00:00Z"), at("2026-03-31T22:00:00Z"))
        );
        // India is UTC+5:30: hours start at half past in UTC.
        let ist = TimeZone::get("Asia/Kolkata").unwrap();
        let h = bounds(Window::Hour, &ist, at("2026-03-15T13:45:10Z"));
        assert_eq!(h.start, at("2026-03-15T13:30:00Z"));
    }
}
