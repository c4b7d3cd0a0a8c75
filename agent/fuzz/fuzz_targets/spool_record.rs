//! Spool record reader on arbitrary segment bytes: never panics, and every record it accepts
//! is exactly what the writer's framing produces for that payload (so a torn or corrupt
//! record is never read back as data).
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::sink::spool::{frame, read_next};

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    let mut payload = Vec::new();
    let mut reframed = Vec::new();
    loop {
        let start = cursor.position() as usize;
        match read_next(&mut cursor, &mut payload) {
            Ok(llmtrace_agent::sink::spool::Next::Record { written_at_us }) => {
                reframed.clear();
                frame(&payload, written_at_us, &mut reframed);
                let end = cursor.position() as usize;
                assert_eq!(&data[start..end], &reframed[..]);
            }
            Ok(_) | Err(_) => break,
        }
    }
});
