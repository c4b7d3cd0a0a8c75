//! ClientHello sniffer: never panics on any bytes, and once a prefix holds a whole
//! ClientHello, more bytes after it never change the answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtrace_agent::transport::sniff::{Sniff, parse};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = parse(bytes);
    let cut = usize::from(cut) * bytes.len() / 255;
    match parse(&bytes[..cut]) {
        Sniff::Hello(info) => assert_eq!(whole, Sniff::Hello(info)),
        Sniff::NotHello(why) => assert_eq!(whole, Sniff::NotHello(why)),
        Sniff::NeedMore => {}
    }
    if let Sniff::Hello(info) = whole {
        // A server name is kept only when it is a lowercase host name.
        if let Some(sni) = info.sni {
            assert_eq!(sni, sni.to_ascii_lowercase());
        }
    }
});
