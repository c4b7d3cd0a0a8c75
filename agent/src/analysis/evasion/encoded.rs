//! Decoders for encoded segments of untrusted text: base64 (standard and URL-safe), hex, URL
//! percent-escapes and ROT13. Each is total (never panics, whatever the bytes) and bounded by
//! its input; a decoded segment counts only when it is printable text, so binary blobs (images,
//! hashes, UUIDs) are skipped.

use std::ops::Range;

use super::Mapped;

/// Shortest base64 segment decoded (15 bytes of text: shorter carries no known secret).
pub const MIN_BASE64: usize = 20;
/// Shortest hex segment decoded (16 bytes of text).
pub const MIN_HEX: usize = 32;

/// A byte of the base64 alphabets (standard `+/`, URL-safe `-_`); padding `=` ends a segment.
/// The definition the vector mask below is tested against.
// Bitwise, not lazy, operators: branch-free, for the portable block mask.
#[allow(clippy::needless_bitwise_bool)]
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
#[inline]
fn is_b64(c: u8) -> bool {
    let l = c | 0x20;
    (l.wrapping_sub(b'a') < 26)
        | (c.wrapping_sub(b'0') < 10)
        | (c == b'+')
        | (c == b'/')
        | (c == b'-')
        | (c == b'_')
}

/// Bytes per block of [`long_runs`]: one bit each in a `u64` mask.
const BLOCK: usize = 64;

/// Bit `i` set when byte `i` of the block is a base64 byte: 16 bytes per compare with SSE2,
/// part of every x86_64 CPU.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn exact_mask(block: &[u8; BLOCK]) -> u64 {
    use crate::analysis::lanes::{in_range, splat};
    use safe_arch::{
        bitor_m128i as or, cmp_eq_mask_i8_m128i as eq, load_unaligned_m128i, move_mask_i8_m128i,
    };
    let mut m = 0u64;
    for (i, part) in block.as_chunks::<16>().0.iter().enumerate() {
        let c = load_unaligned_m128i(part);
        let is = |v: u8| eq(c, splat(v));
        let letter = in_range(or(c, splat(0x20)), b'a', 26);
        let digit = in_range(c, b'0', 10);
        let sign = or(or(is(b'+'), is(b'/')), or(is(b'-'), is(b'_')));
        // The lanes' top bits, one per byte, in the low 16 bits (the others are zero).
        let lanes = move_mask_i8_m128i(or(or(letter, digit), sign)).cast_unsigned();
        m |= u64::from(lanes) << (16 * i);
    }
    m
}

/// The same mask a byte at a time, where SSE2 is not there to ask.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn exact_mask(block: &[u8; BLOCK]) -> u64 {
    byte_mask(block, is_b64)
}

/// Bit `i` set when `marks` holds for byte `i` of the block: the masks a byte at a time (the
/// loops of a machine without SSE2, and the tests' reference for the vector ones).
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
#[inline]
fn byte_mask(block: &[u8; BLOCK], marks: fn(u8) -> bool) -> u64 {
    let mut m = 0u64;
    for (i, &c) in block.iter().enumerate() {
        m |= u64::from(marks(c)) << i;
    }
    m
}

/// The bytes from `+` to `z`: every base64 byte is one of them. Spaces, quotes, line ends
/// and every non-ASCII byte are not, so in prose a run of them seldom reaches
/// [`MIN_BASE64`].
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
#[inline]
fn is_near_b64(c: u8) -> bool {
    (b'+'..=b'z').contains(&c)
}

/// Bit `i` set when byte `i` of the block is a byte from `+` to `z`: one range compare per 16
/// bytes where [`exact_mask`] takes two range compares and four equality compares.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn near_mask(block: &[u8; BLOCK]) -> u64 {
    use crate::analysis::lanes::in_range;
    use safe_arch::{load_unaligned_m128i, move_mask_i8_m128i};
    let mut m = 0u64;
    for (i, part) in block.as_chunks::<16>().0.iter().enumerate() {
        let near = in_range(load_unaligned_m128i(part), b'+', b'z' - b'+' + 1);
        m |= u64::from(move_mask_i8_m128i(near).cast_unsigned()) << (16 * i);
    }
    m
}

/// The same mask a byte at a time, where SSE2 is not there to ask.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn near_mask(block: &[u8; BLOCK]) -> u64 {
    byte_mask(block, is_near_b64)
}

/// The mask holds a run of at least [`MIN_BASE64`] (20) set bits.
#[inline]
fn has_long_run(m: u64) -> bool {
    let m = m & (m >> 1); // runs of 2
    let m = m & (m >> 2); // 4
    let m = m & (m >> 4); // 8
    let m = m & (m >> 8); // 16
    m & (m >> 4) != 0 // 20
}

/// The maximal runs of base64 bytes at least [`MIN_BASE64`] long, in text order. Every such
/// run lies inside a run at least as long of bytes from `+` to `z` ([`near_mask`]), which
/// one compare finds: the text is skimmed for those, and only they are searched for base64
/// runs (a text that is one long base64 blob is read twice, the second time as before). A
/// run of the near bytes is maximal, so the bytes around it end base64 runs too: a base64
/// run maximal inside it is maximal in the text.
pub fn runs(b: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    long_runs(b, near_mask, &mut |near: Range<usize>| {
        long_runs(&b[near.clone()], exact_mask, &mut |r: Range<usize>| {
            out.push(near.start + r.start..near.start + r.end);
        });
    });
    out
}

/// Calls `found` with the maximal runs at least [`MIN_BASE64`] long of the bytes `mask` marks,
/// in text order. One pass over 64-byte blocks as bit masks: a block costs its mask and a few
/// bit operations unless it holds a long run inside it, and runs crossing blocks are carried.
/// No branch depends on where a block's runs end (only on whether a run is long, which is
/// rare): in prose, whether a block ends inside a word is a coin toss the predictor loses.
// Generic in the mask, so that each copy has its mask inlined (a block is a few
// instructions); `found` is called only for long runs.
fn long_runs(b: &[u8], mask: impl Fn(&[u8; BLOCK]) -> u64, found: &mut dyn FnMut(Range<usize>)) {
    // Where the run of marked bytes reaching the current block from below starts: the block's
    // own start when the byte before it is not marked (an empty run).
    let mut run_start = 0;
    let mut base = 0;
    while base < b.len() {
        let m = if let Some(block) = b[base..].first_chunk::<BLOCK>() {
            mask(block)
        } else {
            // The last, partial block, padded with bytes that end a run.
            let mut block = [0u8; BLOCK];
            block[..b.len() - base].copy_from_slice(&b[base..]);
            mask(&block)
        };
        if m == u64::MAX {
            // The run goes on through the whole block.
            base += BLOCK;
            continue;
        }
        // Both below 64: the block has a byte that is not marked.
        let (lo, hi) = (m.trailing_ones() as usize, m.leading_ones() as usize);
        // The run from below ends at the block's first unmarked byte.
        if base + lo - run_start >= MIN_BASE64 {
            found(run_start..base + lo);
        }
        // The runs inside the block, without its bottom run (just ended) and its top run
        // (carried into the next block).
        let inner = m & (u64::MAX << lo) & (u64::MAX >> hi);
        if has_long_run(inner) {
            let mut bit = inner.trailing_zeros();
            while bit < 64 {
                let len = (inner >> bit).trailing_ones();
                let s = base + bit as usize;
                if len as usize >= MIN_BASE64 {
                    found(s..s + len as usize);
                }
                bit += len;
                bit += (inner.checked_shr(bit).unwrap_or(0)).trailing_zeros();
            }
        }
        run_start = base + BLOCK - hi;
        base += BLOCK;
    }
    // A run reaching the end (a partial last block has no top run: its padding ends it).
    if b.len().saturating_sub(run_start) >= MIN_BASE64 {
        found(run_start..b.len());
    }
}

/// `seg` decoded as hex, or `None` when it is not all hex digits of even length.
pub fn hex(seg: &[u8]) -> Option<Vec<u8>> {
    if !seg.len().is_multiple_of(2) || !seg.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Some(
        seg.chunks_exact(2)
            .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
            .collect(),
    )
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

fn sextet(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    }))
}

/// `seg` decoded as unpadded base64 (either alphabet); a trailing partial group of one
/// character is dropped. `None` on a byte outside the alphabets.
pub fn base64(seg: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(seg.len() / 4 * 3 + 2);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for &c in seg {
        acc = (acc << 6) | sextet(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            // Truncation intended: the 8 bits of the accumulator above `bits`.
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Decoded bytes that read as text: valid UTF-8 without control characters other than
/// whitespace, holding at least one letter or digit.
pub fn printable(bytes: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(bytes).ok()?;
    let ok = s
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        && s.chars().any(char::is_alphanumeric);
    ok.then_some(s)
}

/// Which decoding of a base64-alphabet run reads as text, if any: hex first (a subset of the
/// alphabet), then base64 from the run's start; a run prefixed by a path or a key (`com/…`,
/// `v1/…`) is retried on its parts between `/`.
pub fn decode_run(seg: &[u8]) -> Option<(String, super::super::finding::View, Range<usize>)> {
    use super::super::finding::View;
    if seg.len() >= MIN_HEX
        && let Some(d) = hex(seg)
        && let Some(s) = printable(&d)
    {
        return Some((s.to_owned(), View::Hex, 0..seg.len()));
    }
    if let Some(d) = base64(seg)
        && let Some(s) = printable(&d)
    {
        return Some((s.to_owned(), View::Base64, 0..seg.len()));
    }
    if seg.contains(&b'/') {
        let mut at = 0;
        for part in seg.split(|&c| c == b'/') {
            let range = at..at + part.len();
            at += part.len() + 1;
            if part.len() >= MIN_BASE64
                && let Some(d) = base64(part)
                && let Some(s) = printable(&d)
            {
                return Some((s.to_owned(), View::Base64, range));
            }
        }
    }
    None
}

/// The text holds a `%XX` escape of an ASCII byte.
pub fn has_percent_escape(text: &str) -> bool {
    let b = text.as_bytes();
    memchr::memchr_iter(b'%', b).any(|i| escape_at(b, i).is_some())
}

/// The ASCII byte `%XX` at `at` stands for.
fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    let high = *bytes.get(at + 1)?;
    let low = *bytes.get(at + 2)?;
    if !high.is_ascii_hexdigit() || !low.is_ascii_hexdigit() {
        return None;
    }
    let byte = (nibble(high) << 4) | nibble(low);
    byte.is_ascii().then_some(byte)
}

/// The text with `%XX` escapes of ASCII bytes decoded and `+` read as a space (a query
/// string's form encoding); escapes of other bytes are kept as written.
pub fn url_view(text: &str) -> Mapped {
    let b = text.as_bytes();
    let mut out = Mapped::with_capacity(text.len());
    let mut i = 0;
    for (at, c) in text.char_indices() {
        if at < i {
            continue;
        }
        if c == '%'
            && let Some(v) = escape_at(b, at)
        {
            out.push(char::from(v), at);
            i = at + 3;
            continue;
        }
        out.push(if c == '+' { ' ' } else { c }, at);
        i = at + c.len_utf8();
    }
    out.finish(text.len());
    out
}

/// ROT13 of the ASCII letters; every other byte unchanged, so spans map one to one.
pub fn rot13(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'a'..='m' | 'A'..='M' => char::from(c as u8 + 13),
            'n'..='z' | 'N'..='Z' => char::from(c as u8 - 13),
            _ => c,
        })
        .collect()
}

/// ROT13 anchors for the trigger pass: words every injection or jailbreak phrase worth
/// decoding holds, written in ROT13. Seeing one makes the text worth a ROT13 view.
pub const ROT13_ANCHORS: &[&str] = &[
    "vtaber",          // ignore
    "qvfertneq",       // disregard
    "vafgehpgvbaf",    // instructions
    "flfgrz cebzcg",   // system prompt
    "wnvyoernx",       // jailbreak
    "qb nalguvat abj", // do anything now
    "qrirybcre zbqr",  // developer mode
];

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_runs(b: &[u8]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if !is_b64(b[i]) {
                i += 1;
                continue;
            }
            let s = i;
            while i < b.len() && is_b64(b[i]) {
                i += 1;
            }
            if i - s >= MIN_BASE64 {
                out.push(s..i);
            }
        }
        out
    }

    #[test]
    fn runs_match_a_byte_by_byte_scan() {
        let mut rng = 0x1234_5678_u64;
        for len in 0..300 {
            for _ in 0..20 {
                let text: Vec<u8> = (0..len)
                    .map(|_| {
                        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        // Mostly base64 bytes, sometimes a break, so runs of every length.
                        if (rng >> 40).is_multiple_of(23) {
                            b' '
                        } else {
                            b'Q'
                        }
                    })
                    .collect();
                assert_eq!(runs(&text), naive_runs(&text), "{len}");
            }
        }
        let s = b"key=QUtJQUlPU0ZPRE5ON0VYQU1QTEU= and 3f786850e387550fdab836ed7e6dc881de23001b";
        assert_eq!(runs(s), naive_runs(s));
        // Several runs inside stretches of the skim's bytes that are not all base64 bytes
        // (`.`, `,`, `:`, `=`, `@`, `[`), at a stretch's start and end, across blocks, and a
        // stretch ending exactly at a block's end (byte 64).
        let stretch = b"QUtJQUlPU0ZPRE5ON0VYQU1QTEU=@x[aaaaaaaaaaaaaaaaaaaaaaaa";
        let mut s = b" ".repeat(BLOCK - stretch.len());
        s.extend_from_slice(stretch);
        assert_eq!(s.len(), BLOCK);
        s.extend_from_slice(b" a.b,c:");
        s.extend_from_slice(stretch);
        s.extend_from_slice(b" ");
        s.extend_from_slice(&[&stretch[..]; 3].join(&b","[..]));
        let got = runs(&s);
        assert_eq!(got, naive_runs(&s));
        assert_eq!(got.len(), 2 + 2 + 6);
        assert_eq!(got[1].end, BLOCK);
    }

    #[test]
    fn both_masks_classify_every_byte_in_every_lane() {
        for c in 0..=u8::MAX {
            for lane in 0..BLOCK {
                // The byte under test in one lane, base64 bytes and others around it.
                let mut block = [b'A'; BLOCK];
                block[(lane + 1) % BLOCK] = b' ';
                block[lane] = c;
                assert_eq!(
                    exact_mask(&block),
                    byte_mask(&block, is_b64),
                    "byte {c:#04x} in lane {lane}"
                );
                assert_eq!(
                    near_mask(&block),
                    byte_mask(&block, is_near_b64),
                    "byte {c:#04x} in lane {lane}"
                );
            }
            // The skim's bytes hold every base64 byte.
            assert!(!is_b64(c) || is_near_b64(c), "{c:#04x}");
        }
    }

    proptest::proptest! {
        #[test]
        fn runs_of_any_bytes_match_a_byte_by_byte_scan(
            text in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::sample::select(b"Az09+/-_".to_vec()),
                    1 => proptest::num::u8::ANY,
                ],
                0..400,
            ),
        ) {
            proptest::prop_assert_eq!(runs(&text), naive_runs(&text));
        }

        /// Texts of stretches of one kind of byte (base64, near but not base64, a run's end,
        /// any), of lengths around a run's minimum and a block's length: full blocks, runs
        /// ending at a block's edge and several runs in one stretch of near bytes.
        #[test]
        fn runs_of_stretches_match_a_byte_by_byte_scan(
            stretches in proptest::collection::vec(
                (
                    proptest::sample::select(vec![&b"Qz9+_"[..], b".,:=@[", b" \n\"{", b"Q.Q.Q "]),
                    proptest::prop_oneof![
                        proptest::sample::select(vec![1usize, 19, 20, 21, 63, 64, 65, 128]),
                        0usize..200,
                    ],
                    proptest::num::u8::ANY,
                ),
                0..12,
            ),
        ) {
            let mut text = Vec::new();
            for (bytes, len, pick) in stretches {
                let at = usize::from(pick);
                text.extend((0..len).map(|i| bytes[(at + i) % bytes.len()]));
            }
            proptest::prop_assert_eq!(runs(&text), naive_runs(&text));
        }
    }

    #[test]
    fn decoders() {
        assert_eq!(
            base64(b"QUtJQUlPU0ZPRE5ON0VYQU1QTEU").unwrap(),
            b"AKIAIOSFODNN7EXAMPLE"
        );
        assert_eq!(hex(b"414b4941").unwrap(), b"AKIA");
        assert!(hex(b"41x").is_none());
        assert!(base64(b"ab=c").is_none());
        assert!(printable(&[0, 1, 2]).is_none());
        assert_eq!(rot13("Vtaber nyy"), "Ignore all");
        assert_eq!(url_view("a%41+b%zz%e9").text, "aA b%zz%e9");
        let (text, view, range) = decode_run(b"com/QUtJQUlPU0ZPRE5ON0VYQU1QTEU").unwrap();
        assert_eq!(
            (text.as_str(), view, range),
            (
                "AKIAIOSFODNN7EXAMPLE",
                super::super::super::finding::View::Base64,
                4..31
            )
        );
        // Binary payloads (hashes, UUIDs) are not text.
        assert!(decode_run(b"3f786850e387550fdab836ed7e6dc881de23001b").is_none());
        assert!(decode_run(b"550e8400-e29b-41d4-a716-446655440000").is_none());
    }

    #[test]
    fn url_view_maps_back() {
        let text = "x=AKIA%49OSFODNN7EXAMPLE&y";
        let v = url_view(text);
        let at = v.text.find("AKIA").unwrap();
        let span = v.original(at..at + 20);
        assert_eq!(&text[span], "AKIA%49OSFODNN7EXAMPLE");
    }

    proptest::proptest! {
        #[test]
        fn url_view_bytes_map_to_the_characters_they_came_from(
            text in "[a+%4Eé売]{0,40}",
        ) {
            let v = url_view(&text);
            // Each view character, and where it came from: an escape, a `+` or a character.
            let mut sources = Vec::new();
            let mut at = 0;
            while at < text.len() {
                let (c, len) = match escape_at(text.as_bytes(), at) {
                    Some(b) if text.as_bytes()[at] == b'%' => (char::from(b), 3),
                    _ => {
                        let c = text[at..].chars().next().unwrap();
                        (if c == '+' { ' ' } else { c }, c.len_utf8())
                    }
                };
                sources.extend(std::iter::repeat_n(at as u32, c.len_utf8()));
                at += len;
            }
            sources.push(text.len() as u32);
            let got: Vec<u32> = (0..=v.text.len()).map(|i| v.source(i)).collect();
            proptest::prop_assert_eq!(got, sources);
        }
    }
}
