//! RowBinary decoding of trace rows (dead letters, the spool, query results): never panics,
//! and a row that decodes encodes back to bytes that decode and encode to the same bytes.
//! Bytes, not rows, are compared: a Float64 column may hold NaN, which is never equal to
//! itself although it round-trips exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::sink::rowbinary::{decode, decode_all, encode};

fuzz_target!(|data: &[u8]| {
    let _ = decode_all(data);
    if let Ok(row) = decode(data) {
        let mut again = Vec::new();
        encode(&row, &mut again);
        let back = decode(&again).expect("re-encoded row decodes");
        let mut thrice = Vec::new();
        encode(&back, &mut thrice);
        assert_eq!(again, thrice);
    }
});
