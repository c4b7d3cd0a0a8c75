//! Feature hashing of the learned detector, bit for bit the one of
//! `models/injection/features.py` (golden vectors written by the training script check it).
//!
//! Text is normalised (ASCII lowercased, whitespace runs one space, other bytes kept), cut
//! into chunks, and each chunk yields bucket ids: character 4-grams of bytes by
//! multiplicative hashing of the packed bytes (`llmtrace_ngram`, vectorised), then word
//! unigrams and bigrams by FNV-1a.

use std::ops::Range;

mod words;

pub use words::WordHashes;

const TAG_WORD: u64 = 0x5741_0000_0000_0001;
const TAG_BIGRAM: u64 = 0x5742_0000_0000_0002;
const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// A byte's normalised form: whitespace becomes a space, ASCII letters lowercase. (The byte
/// loop of a machine without SSE2, and the tests' reference.)
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
const fn normal(b: u8) -> u8 {
    if is_space(b) {
        b' '
    } else {
        b.to_ascii_lowercase()
    }
}

/// Bytes normalised together: a block is mapped with vector instructions and, unless it holds
/// two spaces in a row, copied out whole.
const BLOCK: usize = 32;
// A block's whitespace is a `u32` mask: a bit per byte.
const _: () = assert!(BLOCK == u32::BITS as usize);

/// The bytes of a word in normalised text: the word loop looks a byte up instead of making
/// three comparisons.
static WORD: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)] // i < 256
        let b = i as u8;
        t[i] = is_word(b);
        i += 1;
    }
    t
};

#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
const fn is_space(b: u8) -> bool {
    // b'\t' ..= b'\r' are tab, line feed, vertical tab, form feed and carriage return.
    b == b' ' || b.wrapping_sub(b'\t') < 5
}

const fn is_word(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b >= 0x80
}

/// Writes the normalised form of `text` to `out` (replacing its contents). Text comes in
/// blocks, each mapped and copied a run of kept bytes at a time: most blocks of prose have no
/// run of whitespace and are one run, copied whole; indented code has blocks of several.
pub fn normalise_into(text: &[u8], out: &mut Vec<u8>) {
    out.clear();
    // A block's length of room past the text's: [`copy_kept`] writes whole blocks.
    out.resize(text.len() + BLOCK, 0);
    // `k` bytes written; whether the last byte read is whitespace (a space after it is dropped).
    let (mut k, mut space) = (0, false);
    for block in text.chunks(BLOCK) {
        let m = Mapped::of(block);
        k = copy_kept(&m.bytes, kept(m.white, block.len(), space), out, k);
        space = m.ends_white(block.len());
    }
    out.truncate(k);
}

/// A block of at most [`BLOCK`] bytes, normalised.
struct Mapped {
    /// The normalised bytes, followed by zeros up to twice a block's length: [`copy_kept`]
    /// copies a whole block's length from any index below [`BLOCK`].
    bytes: [u8; 2 * BLOCK],
    /// The block's whitespace: bit `i` for byte `i`.
    white: u32,
}

impl Mapped {
    /// `block` mapped (a shorter one as if padded with zeros, which are neither whitespace nor
    /// letters).
    fn of(block: &[u8]) -> Self {
        if let Some(whole) = block.as_array::<BLOCK>() {
            map_block(whole)
        } else {
            let mut padded = [0u8; BLOCK];
            padded[..block.len()].copy_from_slice(block);
            map_block(&padded)
        }
    }

    /// Whether byte `len - 1` of the block is whitespace (`len` from 1 to [`BLOCK`]).
    fn ends_white(&self, len: usize) -> bool {
        self.white >> (len - 1) & 1 == 1
    }
}

/// A block mapped 16 bytes an instruction: the whitespace compared into a mask (`pmovmskb`),
/// capitals lowered by adding 32.
// Out of line: inlined into the block loops, the compiler took each mask apart a byte at a
// time on the stack instead of one `pmovmskb` (the learned row was 5% slower than before).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(never)]
fn map_block(block: &[u8; BLOCK]) -> Mapped {
    use crate::analysis::lanes::{in_range, splat};
    use safe_arch::{
        add_i8_m128i, bitand_m128i, bitandnot_m128i, bitor_m128i, cmp_eq_mask_i8_m128i, m128i,
        move_mask_i8_m128i,
    };
    let half = |v: [u8; 16]| {
        let v = m128i::from(v);
        let white = bitor_m128i(cmp_eq_mask_i8_m128i(v, splat(b' ')), in_range(v, b'\t', 5));
        let lowered = add_i8_m128i(v, bitand_m128i(in_range(v, b'A', 26), splat(32)));
        let normal = bitor_m128i(
            bitand_m128i(white, splat(b' ')),
            bitandnot_m128i(white, lowered),
        );
        // The mask's low 16 bits are the half's bytes.
        #[allow(clippy::cast_sign_loss)]
        let mask = move_mask_i8_m128i(white) as u32;
        (<[u8; 16]>::from(normal), mask)
    };
    let ([lo, hi], _) = block.as_chunks::<16>() else {
        unreachable!("a block is two halves")
    };
    let ((lo, lo_white), (hi, hi_white)) = (half(*lo), half(*hi));
    let mut bytes = [0; 2 * BLOCK];
    bytes[..16].copy_from_slice(&lo);
    bytes[16..BLOCK].copy_from_slice(&hi);
    Mapped {
        bytes,
        white: lo_white | hi_white << 16,
    }
}

/// [`map_block`] a byte at a time, where SSE2 is not there to ask.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
fn map_block(block: &[u8; BLOCK]) -> Mapped {
    map_block_bytes(block)
}

/// [`map_block`] a byte at a time.
#[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
fn map_block_bytes(block: &[u8; BLOCK]) -> Mapped {
    let mut m = Mapped {
        bytes: [0; 2 * BLOCK],
        white: 0,
    };
    for (i, &b) in block.iter().enumerate() {
        m.bytes[i] = normal(b);
        m.white |= u32::from(is_space(b)) << i;
    }
    m
}

/// The bytes normalisation keeps of the first `len` (at most [`BLOCK`]) bytes of a block
/// whose whitespace is `white`, as a mask (bit `i`: byte `i`), `space` telling whether the
/// byte before the block is whitespace: every byte but whitespace after whitespace. The one
/// rule of normalising and of mapping offsets back, which must agree.
fn kept(white: u32, len: usize, space: bool) -> u32 {
    let dropped = white & ((white << 1) | u32::from(space));
    // The low `len` bits; `len` is at most 32.
    #[allow(clippy::cast_possible_truncation)] // the shifted mask's low 32 bits
    let first = !(u64::MAX << len) as u32;
    !dropped & first
}

/// Writes the bytes of the normalised block `m` that `keep` marks to `out` from index `k`;
/// returns the index after them. A run of kept bytes is copied as a whole block (fixed
/// length, no call), the next run overwriting what lies past it: a block of indented code
/// has a few runs, not one branch per byte.
fn copy_kept(m: &[u8; 2 * BLOCK], mut keep: u32, out: &mut [u8], mut k: usize) -> usize {
    while keep != 0 {
        let start = keep.trailing_zeros() as usize;
        let run = (!(keep >> start)).trailing_zeros() as usize;
        // `k` is at most the offset in the text of byte `start` of the block (never more
        // bytes out than in), and `out` has a block's length of room past the text: a
        // block's length from `k` fits.
        out[k..k + BLOCK].copy_from_slice(&m[start..start + BLOCK]);
        k += run;
        // Clears the run's bits (and those below it); `start + run` is at most 32.
        #[allow(clippy::cast_possible_truncation)] // the shifted mask's low 32 bits
        let above = (u64::MAX << (start + run)) as u32;
        keep &= above;
    }
    k
}

/// The offset in `text` of the byte that became normalised byte `pos` (`text.len()` past the
/// end): used only to place a finding.
pub fn original_offset(text: &[u8], pos: usize) -> usize {
    // Counts kept bytes a block at a time, from the mask normalisation uses; in the block
    // that takes the count past `pos`, the kept byte at that rank is the one.
    let (mut n, mut space, mut at) = (0, false, 0);
    for block in text.chunks(BLOCK) {
        let m = Mapped::of(block);
        let keep = kept(m.white, block.len(), space);
        let count = keep.count_ones() as usize;
        if n + count > pos {
            return at + nth_one(keep, pos - n);
        }
        n += count;
        space = m.ends_white(block.len());
        at += block.len();
    }
    text.len()
}

/// The index of the set bit of rank `r` (from 0) in `mask`, which has more than `r` of them.
fn nth_one(mut mask: u32, r: usize) -> usize {
    for _ in 0..r {
        mask &= mask - 1;
    }
    mask.trailing_zeros() as usize
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

/// Appends every bucket id (< 2^`bits`) of one normalised chunk to `out`: character 4-grams
/// (by the vectorised extractor), then each word's unigram and its bigram with the word
/// before. The ids are those of the Python extractor; the order differs (all grams before the
/// words), which the model does not see: a chunk is a set of features. `words` is room the
/// word hashes reuse from chunk to chunk.
pub fn chunk_buckets(chunk: &[u8], bits: u32, out: &mut Vec<u32>, words: &mut WordHashes) {
    llmtrace_ngram::buckets(chunk, bits, out);
    words::word_buckets(chunk, bits, out, words);
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmtrace_ngram::K;

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
    fn blocks_map_as_bytes_do() {
        // Every byte value, in blocks shifted by one each time (each value meets each lane).
        let all: Vec<u8> = (0..=255u8).chain(0..=255).collect();
        for at in 0..BLOCK {
            for block in all[at..].as_chunks::<BLOCK>().0 {
                let (got, want) = (map_block(block), map_block_bytes(block));
                assert_eq!(
                    (got.bytes, got.white),
                    (want.bytes, want.white),
                    "{block:?}"
                );
            }
        }
    }

    #[test]
    fn offsets_skip_whole_blocks_and_stop_inside_them() {
        // Long runs without doubled whitespace (counted a block at a time) between runs of it.
        let text = "The quarterly report shows revenue grew by twelve percent while costs \
                    stayed flat.  \t\n Next  line\t\there; "
            .repeat(9);
        let text = text.as_bytes();
        let mut norm = Vec::new();
        normalise_into(text, &mut norm);
        // The byte by byte count the block skipping must agree with.
        let mut want = Vec::new();
        let mut space = false;
        for (i, &b) in text.iter().enumerate() {
            let is = is_space(b);
            if !(is && space) {
                want.push(i);
            }
            space = is;
        }
        want.push(text.len());
        assert_eq!(want.len(), norm.len() + 1);
        for (p, &w) in want.iter().enumerate() {
            assert_eq!(original_offset(text, p), w, "normalised byte {p}");
        }
    }

    /// The straightforward extractor, in the Python script's order.
    fn reference(chunk: &[u8], bits: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let shift = 64 - bits;
        let mut f = |x: u64| out.push(u32::try_from(x.wrapping_mul(K) >> shift).unwrap());
        let mut window = 0u64;
        for (i, &b) in chunk.iter().enumerate() {
            window = (window << 8) | u64::from(b);
            if i >= 3 {
                f((window & 0xFFFF_FFFF) | (4 << 40));
            }
        }
        let mut prev: Option<u64> = None;
        let mut h: Option<u64> = None;
        let mut flush = |h: u64, prev: &mut Option<u64>| {
            f(h ^ TAG_WORD);
            if let Some(p) = *prev {
                f(p.rotate_left(17) ^ h ^ TAG_BIGRAM);
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
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn fast_loops_match_the_reference_as_a_multiset(
            text in "[ \tab.,\n1Z\u{b}é]{0,200}",
            bits in proptest::sample::select(vec![8u32, 14, 24]),
        ) {
            let mut norm = Vec::new();
            normalise_into(text.as_bytes(), &mut norm);
            let mut want = Vec::new();
            for &b in text.as_bytes() {
                if !(is_space(b) && want.last() == Some(&b' ')) {
                    want.push(if is_space(b) { b' ' } else { b.to_ascii_lowercase() });
                }
            }
            proptest::prop_assert_eq!(&norm, &want);
            // Each normalised byte maps back to a byte that normalises to it, in order.
            let offsets: Vec<usize> =
                (0..=norm.len()).map(|p| original_offset(text.as_bytes(), p)).collect();
            for (p, &o) in offsets[..norm.len()].iter().enumerate() {
                proptest::prop_assert_eq!(normal(text.as_bytes()[o]), norm[p]);
            }
            proptest::prop_assert!(offsets.windows(2).all(|w| w[0] < w[1]));
            proptest::prop_assert_eq!(offsets[norm.len()], text.len());
            let mut got = Vec::new();
            chunk_buckets(&norm, bits, &mut got, &mut WordHashes::default());
            got.sort_unstable();
            let mut want = reference(&norm, bits);
            want.sort_unstable();
            proptest::prop_assert_eq!(got, want);
        }
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
