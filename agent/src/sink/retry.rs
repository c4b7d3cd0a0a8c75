//! Which ClickHouse failures are worth retrying, and how long to wait.
//!
//! Only errors that say *this data* is bad are final: retrying them can
//! never succeed, so the batch is split and the bad rows quarantined.
//! Everything else (network, timeouts, overload, missing table, auth) is
//! retried forever with capped exponential backoff: the data is fine and an
//! operator or the server will fix the cause.

use std::time::Duration;

/// How to treat a failed insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Try the same batch again later.
    Retryable,
    /// The server rejected the data itself; retrying cannot help.
    Invalid,
}

/// ClickHouse error codes that mean the inserted bytes are malformed or
/// out of range (names from `src/Common/ErrorCodes.cpp`).
const INVALID_DATA_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    128, // TOO_LARGE_ARRAY_SIZE
    131, // TOO_LARGE_STRING_SIZE
    190, // SIZES_OF_ARRAYS_DONT_MATCH
    469, // VIOLATED_CONSTRAINT
];

/// Classifies an error of the `clickhouse` crate.
pub fn classify(err: &clickhouse::error::Error) -> Class {
    match err {
        clickhouse::error::Error::BadResponse(msg) => classify_message(msg),
        _ => Class::Retryable,
    }
}

/// Classifies a server error message (`Code: 33, e.displayText() = ...` on
/// old servers, `Code: 33. DB::Exception: ...` on new ones).
pub fn classify_message(msg: &str) -> Class {
    match error_code(msg) {
        Some(code) if INVALID_DATA_CODES.contains(&code) => Class::Invalid,
        Some(MEMORY_LIMIT_EXCEEDED) if absurd_allocation(msg) => Class::Invalid,
        _ => Class::Retryable,
    }
}

/// MEMORY_LIMIT_EXCEEDED: retryable (a busy server), unless the allocation it refused is one no
/// batch could need.
const MEMORY_LIMIT_EXCEEDED: u32 = 241;

/// A batch holds at most `batch_bytes` (tens of MiB); an allocation of a TiB or more was sized by
/// a length read from malformed bytes (a misaligned RowBinary row makes the server read string
/// or array sizes from garbage), so retrying the same bytes would fail forever.
const ABSURD_ALLOCATION_BYTES: u64 = 1 << 40;

fn absurd_allocation(msg: &str) -> bool {
    let Some(at) = msg.find("allocate chunk of ") else {
        return false;
    };
    let rest = &msg[at + "allocate chunk of ".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits]
        .parse::<u64>()
        .is_ok_and(|n| n >= ABSURD_ALLOCATION_BYTES)
}

/// The numeric ClickHouse error code in a message, if any.
pub fn error_code(msg: &str) -> Option<u32> {
    let rest = &msg[msg.find("Code: ")? + 6..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// Exponential backoff with full jitter, capped.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, never exceeds `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next pause: random in `[d/2, d]` where `d = base·2^attempt`, capped.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_limit_is_retried_unless_malformed_bytes_sized_it() {
        // ClickHouse 18.16 reading a string length from a misaligned row.
        let garbage = "Code: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded: \
                       would use 32.00 PiB (attempt to allocate chunk of 36028797018963968 bytes), \
                       maximum: 9.31 GiB, e.what() = DB::Exception";
        assert_eq!(classify_message(garbage), Class::Invalid);
        let busy = "Code: 241. DB::Exception: Memory limit (total) exceeded: would use 9.40 GiB \
                    (attempt to allocate chunk of 4194304 bytes), maximum: 9.31 GiB";
        assert_eq!(classify_message(busy), Class::Retryable);
        let no_size = "Code: 241. DB::Exception: Memory limit (for query) exceeded";
        assert_eq!(classify_message(no_size), Class::Retryable);
    }

    #[test]
    fn codes_are_parsed_from_old_and_new_messages() {
        let old = "Code: 33, e.displayText() = DB::Exception: Cannot read all data. Bytes read: 3";
        let new = "Code: 27. DB::Exception: Cannot parse input: expected ... (CANNOT_PARSE_INPUT_ASSERTION_FAILED)";
        assert_eq!(error_code(old), Some(33));
        assert_eq!(classify_message(old), Class::Invalid);
        assert_eq!(classify_message(new), Class::Invalid);
        assert_eq!(
            classify_message("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist"),
            Class::Retryable
        );
        assert_eq!(classify_message("bad gateway"), Class::Retryable);
        assert_eq!(
            classify(&clickhouse::error::Error::TimedOut),
            Class::Retryable
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
    }
}
