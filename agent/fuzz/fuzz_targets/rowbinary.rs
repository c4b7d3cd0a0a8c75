//! RowBinary decoding of trace rows (dead letters, the spool, query results): never panics,
//! and a row that decodes encodes back to bytes that decode to the same row.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::sink::rowbinary::{decode, decode_all, encode};

fuzz_target!(|data: &[u8]| {
    let _ = decode_all(data);
    if let Ok(row) = decode(data) {
        let mut again = Vec::new();
        encode(&row, &mut again);
        assert_eq!(decode(&again).expect("re-encoded row decodes"), row);
    }
});
