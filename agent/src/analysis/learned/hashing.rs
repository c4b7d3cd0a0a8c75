//! Feature hashing of the learned detector, bit for bit the one of
//! `models/injection/features.py` (golden vectors written by the training script check it).
//!
//! Text is normalised (ASCII lowercased, whitespace runs one space, other bytes kept), cut
//! into chunks, and each chunk yields bucket ids: character 4-grams of bytes by
//! multiplicative hashing of the packed bytes (`llmtrace_ngram`, vectorised), then word
//! unigrams and bigrams by FNV-1a.

use std::ops::Range;

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
    word_buckets(chunk, bits, out, words);
}

/// Words are hashed over this many parts of a chunk at once. Two chains keep the multiplier
/// busy; four were no faster (the loop ran out of registers).
const STREAMS: usize = 2;
/// Room for the word hashes of one part; a power of two, so that masking an index proves it in
/// bounds (no bounds check per byte). See [`fits`] for the parts it holds.
const PART_WORDS: usize = 2048;

/// Whether a part's words fit its room. A word ends with a byte of its own and the byte after
/// it, so a part of `n` bytes ends at most `n / 2` words: its stream stores at slots up to
/// `n / 2` and its words are at most `(n + 1) / 2` slots, both inside the room for `n` below
/// `2 * PART_WORDS`. (A model chunk is 4,096 bytes, a part about half of it.)
fn fits(part: &[u8]) -> bool {
    part.len() < 2 * PART_WORDS
}

/// Room for the hashes of a chunk's words, kept between chunks (32 KiB once used).
#[derive(Debug, Default)]
pub struct WordHashes(Vec<u64>);

/// Word unigrams and bigrams by FNV-1a, in text order (the serial loop's ids in its order).
/// FNV-1a is a chain of a multiplication per byte, each waiting for the one before: the chunk
/// is cut into [`STREAMS`] parts at bytes between words and the parts are hashed side by side,
/// a byte of each per step, without a branch. One chain with a branch per byte mispredicts at
/// word ends: over varied prose the learned model takes 30% less time this way. Over the
/// analysis benchmark's templated fixtures, whose word ends the branch predictor learns, both
/// take the same time.
fn word_buckets(chunk: &[u8], bits: u32, out: &mut Vec<u32>, words: &mut WordHashes) {
    let halves = parts(chunk);
    if !halves.iter().all(|p| fits(p)) {
        return word_buckets_serial(chunk, bits, out);
    }
    words.0.resize(STREAMS * PART_WORDS, 0);
    let (rooms, _) = words.0.as_chunks_mut::<PART_WORDS>();
    let [r0, r1] = rooms else {
        unreachable!("room for {STREAMS} parts")
    };
    let [mut s0, mut s1] = [Stream::START; STREAMS];
    // Side by side over the length both parts have, then each part's rest on its own.
    let m = halves[0].len().min(halves[1].len());
    let [p0, p1] = halves.map(|p| &p[..m]);
    for (&b0, &b1) in p0.iter().zip(p1) {
        s0.step(b0, r0);
        s1.step(b1, r1);
    }
    let (s, rooms) = ([s0, s1], [r0, r1]);
    let bucket = |x: u64| llmtrace_ngram::bucket(x, 64 - bits);
    let mut prev = None;
    for ((part, mut stream), room) in halves.iter().zip(s).zip(rooms) {
        for &b in &part[m..] {
            stream.step(b, room);
        }
        let n = stream.finish(room);
        for &h in &room[..n] {
            out.push(bucket(h ^ TAG_WORD));
            if let Some(p) = prev {
                out.push(bucket(bigram(p, h)));
            }
            prev = Some(h);
        }
    }
}

/// The chunk cut into [`STREAMS`] parts of about equal length, each but the first starting at
/// a byte between words (no word is cut) or empty at the end.
fn parts(chunk: &[u8]) -> [&[u8]; STREAMS] {
    let len = chunk.len();
    let mut starts = [len; STREAMS + 1];
    starts[0] = 0;
    for k in 1..STREAMS {
        let q = (len * k / STREAMS).max(starts[k - 1]);
        starts[k] = chunk[q..]
            .iter()
            .position(|&b| !WORD[usize::from(b)])
            .map_or(len, |p| q + p);
    }
    std::array::from_fn(|k| &chunk[starts[k]..starts[k + 1]])
}

/// One part's word hashing: the hash of the word being read, whether the last byte read is a
/// word's (1 or 0), and how many words ended.
#[derive(Clone, Copy)]
struct Stream {
    h: u64,
    in_word: usize,
    n: usize,
}

impl Stream {
    const START: Stream = Stream {
        h: FNV_OFFSET,
        in_word: 0,
        n: 0,
    };

    /// Reads byte `b`. The hash so far is stored at the next slot every time and the count
    /// moves past it only when `b` ends a word: a store and an add instead of a branch.
    /// (Whether a byte is a word's is kept as a number: as a `bool`, the loop had a few more
    /// instructions and was 7% slower.)
    #[allow(clippy::inline_always)] // the streams' steps interleave in one loop body
    #[inline(always)]
    fn step(&mut self, b: u8, room: &mut [u64; PART_WORDS]) {
        let w = usize::from(WORD[usize::from(b)]);
        room[self.n & (PART_WORDS - 1)] = self.h;
        self.n += self.in_word & (w ^ 1);
        let next = (self.h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        self.h = if w == 0 { FNV_OFFSET } else { next };
        self.in_word = w;
    }

    /// The number of words of the part, the last one (ended by the part's end) included.
    fn finish(self, room: &mut [u64; PART_WORDS]) -> usize {
        room[self.n & (PART_WORDS - 1)] = self.h;
        self.n + self.in_word
    }
}

/// The bigram feature of a word hashed `h` after one hashed `prev`.
fn bigram(prev: u64, h: u64) -> u64 {
    prev.rotate_left(17) ^ h ^ TAG_BIGRAM
}

/// [`word_buckets`] one byte at a time: for chunks with a part that does not [`fit`](fits)
/// its room (about twice the model's chunk, or a long word across the middle), and the
/// streams' reference in tests.
fn word_buckets_serial(chunk: &[u8], bits: u32, out: &mut Vec<u32>) {
    // The same hash into the same table as the character n-grams.
    let bucket = |x: u64| llmtrace_ngram::bucket(x, 64 - bits);
    let (mut h, mut in_word) = (FNV_OFFSET, false);
    let mut prev = None;
    // The last word, ended by the end of the chunk, is emitted after the loop: a loop over
    // the bytes alone, without a separator chained after them, is 7% faster per byte of
    // the detector (the chain's two checks ran per byte).
    let mut end_word = |h: u64, out: &mut Vec<u32>| {
        out.push(bucket(h ^ TAG_WORD));
        if let Some(p) = prev {
            out.push(bucket(bigram(p, h)));
        }
        prev = Some(h);
    };
    for &b in chunk {
        if WORD[usize::from(b)] {
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
            in_word = true;
        } else if in_word {
            end_word(h, out);
            (h, in_word) = (FNV_OFFSET, false);
        }
    }
    if in_word {
        end_word(h, out);
    }
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// The streams give the serial loop's ids in its order, over chunks up to and past
        /// the model's length, with words long enough to leave the streams' room.
        #[test]
        fn word_streams_match_the_serial_loop(
            words in proptest::collection::vec(
                ("[a-z0-9é]{0,12}", proptest::bool::weighted(0.005)),
                0..800,
            ),
            sep in "[ .,\n]",
            ends_in_a_word in proptest::bool::ANY,
            bits in proptest::sample::select(vec![8u32, 14, 24]),
        ) {
            let mut chunk = Vec::new();
            for (w, blob) in &words {
                // Now and then a very long word (a blob), so that a part outgrows the room.
                chunk.extend(w.repeat(if *blob { 500 } else { 1 }).bytes());
                chunk.extend(sep.bytes());
            }
            if ends_in_a_word {
                // The last word ended by the chunk's end, not by a separator.
                chunk.extend(b"end");
            }
            let (mut got, mut want) = (Vec::new(), Vec::new());
            word_buckets(&chunk, bits, &mut got, &mut WordHashes::default());
            word_buckets_serial(&chunk, bits, &mut want);
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn parts_cut_between_words_and_cover_the_chunk() {
        let text = b"the quarterly report, shows revenue grew by twelve percent".repeat(5);
        for len in [0, 1, 3, 4, 5, 17, 100, text.len()] {
            let chunk = &text[..len];
            let p = parts(chunk);
            assert_eq!(p.concat(), chunk);
            for part in &p[1..] {
                assert!(
                    part.first().is_none_or(|&b| !WORD[usize::from(b)]),
                    "{part:?}"
                );
            }
        }
        // One word: the first part holds it whole.
        assert_eq!(parts(b"abcdefgh"), [&b"abcdefgh"[..], b""]);
    }

    #[test]
    fn streams_fill_their_room_and_longer_parts_go_serial() {
        // Two halves of `len` bytes each, of one-letter words, the first word of each unlike
        // the others (a store past the room would land on its slot and change its id). The
        // longest parts that fit fill the room to its last slot; a byte more and the chunk
        // goes to the serial loop. Both ways give the serial loop's ids.
        let half = |first: &[u8], rest: &[u8], len: usize| -> Vec<u8> {
            first
                .iter()
                .chain(rest.iter().cycle())
                .take(len)
                .copied()
                .collect()
        };
        for len in [
            2 * PART_WORDS - 2,
            2 * PART_WORDS - 1,
            2 * PART_WORDS,
            2 * PART_WORDS + 1,
        ] {
            let chunk = [half(b"z", b" a", len), half(b" y", b" b", len)].concat();
            let halves = parts(&chunk);
            assert_eq!(halves.map(<[u8]>::len), [len, len]);
            assert_eq!(halves.iter().all(|p| fits(p)), len < 2 * PART_WORDS);
            let (mut got, mut want) = (Vec::new(), Vec::new());
            word_buckets(&chunk, 14, &mut got, &mut WordHashes::default());
            word_buckets_serial(&chunk, 14, &mut want);
            assert_eq!(got, want, "halves of {len} bytes");
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
