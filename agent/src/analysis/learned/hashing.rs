//! Feature hashing of the learned detector, bit for bit the one of
//! `models/injection/features.py` (golden vectors written by the training script check it).
//!
//! Text is normalised (ASCII lowercased, whitespace runs one space, other bytes kept), cut
//! into chunks, and each chunk yields bucket ids: character 3/4/5-grams of bytes by
//! multiplicative hashing of the packed bytes, then word unigrams and bigrams by FNV-1a.
//! No allocation per n-gram: buckets go to a callback.

use std::ops::Range;

const K: u64 = 0x9E37_79B9_7F4A_7C15;
const TAG_WORD: u64 = 0x5741_0000_0000_0001;
const TAG_BIGRAM: u64 = 0x5742_0000_0000_0002;
const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b >= 0x80
}

/// Appends the normalised form of `text` to `out` (cleared first).
pub fn normalise_into(text: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(text.len());
    let mut space = false;
    for &b in text {
        if is_space(b) {
            if !space {
                out.push(b' ');
            }
            space = true;
        } else {
            space = false;
            out.push(b.to_ascii_lowercase());
        }
    }
}

/// The offset in `text` of the byte that became normalised byte `pos` (`text.len()` past the
/// end): used only to place a finding.
pub fn original_offset(text: &[u8], pos: usize) -> usize {
    let mut n = 0;
    let mut space = false;
    for (i, &b) in text.iter().enumerate() {
        let emits = !(is_space(b) && space);
        space = is_space(b);
        if emits {
            if n == pos {
                return i;
            }
            n += 1;
        }
    }
    text.len()
}

/// Chunks of at most `chunk` normalised bytes, each cut after the last space of its final
/// `slack` bytes when there is one.
pub fn chunks(norm: &[u8], chunk: usize, slack: usize) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= norm.len() {
            return None;
        }
        let mut end = (start + chunk).min(norm.len());
        if end < norm.len() {
            let from = end - slack;
            if let Some(p) = norm[from..end].iter().rposition(|&b| b == b' ')
                && from + p > start
            {
                end = from + p + 1;
            }
        }
        let r = start..end;
        start = end;
        Some(r)
    })
}

/// Calls `f` with every bucket id (< 2^`bits`) of one normalised chunk, in the order the
/// Python extractor emits them.
#[inline]
pub fn for_each_bucket(chunk: &[u8], bits: u32, mut f: impl FnMut(usize)) {
    let shift = 64 - bits;
    let bucket = |x: u64| (x.wrapping_mul(K) >> shift) as usize;
    let mut window = 0u64;
    for (i, &b) in chunk.iter().enumerate() {
        window = (window << 8) | u64::from(b);
        if i >= 2 {
            f(bucket((window & 0xFF_FFFF) | (3 << 40)));
        }
        if i >= 3 {
            f(bucket((window & 0xFFFF_FFFF) | (4 << 40)));
        }
        if i >= 4 {
            f(bucket((window & 0xFF_FFFF_FFFF) | (5 << 40)));
        }
    }
    let mut prev: Option<u64> = None;
    let mut h: Option<u64> = None;
    let mut flush = |h: u64, prev: &mut Option<u64>| {
        f(bucket(h ^ TAG_WORD));
        if let Some(p) = *prev {
            f(bucket(p.rotate_left(17) ^ h ^ TAG_BIGRAM));
        }
        *prev = Some(h);
    };
    for &b in chunk {
        if is_word(b) {
            let x = h.unwrap_or(FNV_OFFSET);
            h = Some((x ^ u64::from(b)).wrapping_mul(FNV_PRIME));
        } else if let Some(x) = h.take() {
            flush(x, &mut prev);
        }
    }
    if let Some(x) = h {
        flush(x, &mut prev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_maps_back() {
        let mut out = Vec::new();
        normalise_into(b"Ab \t\n C\xc3\xa9", &mut out);
        assert_eq!(out, b"ab c\xc3\xa9");
        let text = b"Ab \t\n C";
        assert_eq!(original_offset(text, 2), 2);
        assert_eq!(original_offset(text, 3), 6);
        assert_eq!(original_offset(text, 4), text.len());
    }

    #[test]
    fn chunks_cut_after_a_space() {
        let norm = b"aaaa bbbb cccc";
        let c: Vec<_> = chunks(norm, 8, 4).collect();
        assert_eq!(c, [0..5, 5..10, 10..14]);
        let c: Vec<_> = chunks(b"abcdefghij", 4, 2).collect();
        assert_eq!(c, [0..4, 4..8, 8..10]);
    }
}
